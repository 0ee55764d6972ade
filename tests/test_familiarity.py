"""Verdicts that know their limits (issue 33): a run's familiarity fit, its unfamiliarity score
per recording in predict.py, the API and the page, and the refusal of a stale fit."""

import json
import shutil

import numpy as np
import pytest

from conftest import MINI_LA, needs_mini, tone, write_wav
from deepfake_detector import familiarity, inference


def test_the_distance_grows_away_from_the_reference_and_the_threshold_is_a_quantile():
    rng = np.random.default_rng(0)
    train, dev = rng.normal(size=(400, 6)), rng.normal(size=(200, 6))
    fitted = familiarity.fit(train, dev, quantile=0.9)
    d_dev = familiarity.distances(fitted, dev)
    assert np.mean(d_dev <= fitted["threshold"]) == pytest.approx(0.9, abs=0.01)
    far = familiarity.distances(fitted, rng.normal(size=(50, 6)) + 4)
    assert (far > fitted["threshold"]).all() and far.mean() > 2 * d_dev.mean()
    with pytest.raises(ValueError, match="same d"):
        familiarity.fit(train, dev[:, :3])
    with pytest.raises(ValueError, match="finite"):
        familiarity.fit(np.full((5, 6), np.nan), dev)


@pytest.fixture(scope="module")
def fitted_run(trained_run, tmp_path_factory):
    import fit_familiarity

    run = tmp_path_factory.mktemp("fam") / "run"
    shutil.copytree(trained_run, run)
    record = fit_familiarity.main(["--run", str(run), "--quantile", "0.95"])
    return run, record


def test_fit_familiarity_uses_the_run_s_own_split(fitted_run):
    run, record = fitted_run
    split = (run / "split.csv").read_text().splitlines()[1:]
    assert record["train"] == sum(",train," in line for line in split)
    assert record["dev"] == sum(",val," in line for line in split) > 0
    assert record["model"] == "best.keras" and record["quantile"] == 0.95
    detector = inference.Detector(run)
    assert detector.identity(public=True)["familiarity"]["fitted_on"] == ["train"]


@needs_mini
def test_real_speech_is_unfamiliar_to_a_model_of_the_synthetic_demo(fitted_run, demo_corpus,
                                                                    tmp_path, capsys):
    """A recording of a kind absent from training (real speech, for a model trained on the
    synthetic demo corpus) scores higher than recordings of the training kind; the verdict
    says UNCERTAIN, and predict.py's table and JSON say why."""
    import predict

    run, _ = fitted_run
    detector = inference.Detector(run)
    demo = sorted((demo_corpus / "ASVspoof2019_LA_dev" / "flac").glob("*.flac"))[:8]
    real = sorted((MINI_LA / "ASVspoof2019_LA_dev" / "flac").glob("*.flac"))[:8]
    rows = {name: list(inference.score_files(files, detector))
            for name, files in (("demo", demo), ("real", real))}
    u = {k: np.array([r["unfamiliarity"] for r in v]) for k, v in rows.items()}
    assert np.isfinite(u["demo"]).all() and np.isfinite(u["real"]).all()
    assert np.median(u["real"]) > 2 * np.median(u["demo"]), u
    assert np.mean(u["demo"] > 1) <= 0.25
    flagged = [r for r in rows["real"] if r["unfamiliar"]]
    assert flagged and all(r["display"]["verdict"] == "uncertain" and
                           r["display"]["uncertain_reason"] == "unfamiliar" for r in flagged)
    predict.main(["--run", str(run), str(flagged[0]["file"])])
    out = capsys.readouterr().out
    assert f"{flagged[0]['label']}!" in out
    assert "! UNCERTAIN: unlike the recordings this detector was trained on" in out
    predict.main(["--run", str(run), "--json", str(flagged[0]["file"])])
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["unfamiliar"] is True and result["unfamiliarity"] > 1
    assert result["windows"][0]["unfamiliarity"] is not None


def test_a_fit_for_another_model_is_not_used(fitted_run, tmp_path, capsys):
    run, _ = fitted_run
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / "best.keras").touch()  # trained again: another time stamp
    detector = inference.Detector(other)
    assert detector.familiarity is None
    assert "fitted for another best.keras" in capsys.readouterr().err
    y = tone(2.0)
    result = next(inference.score_files([write_wav(tmp_path / "t.wav", y)], detector))
    assert result["unfamiliarity"] is None and result["display"]["unfamiliarity"] is None


def test_the_page_says_unfamiliar_in_words(trained_run, tmp_path):
    """The page's verdict for an unfamiliar recording (the API's answer, as served)."""
    import os

    import test_serve

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium and not os.environ.get("CI"):
        pytest.skip("no system Chromium (CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    wav = write_wav(tmp_path / "t.wav", tone(3.0))
    url, proc = test_serve.start_server(trained_run, tmp_path / "serve.log")
    try:
        res = test_serve.post(url, "t.wav", wav.read_bytes()).json()["results"][0]
        assert res["unfamiliarity"] is None  # this run has no fit: said on the page
        unfamiliar = {**res, "unfamiliarity": 3.21, "unfamiliar": True,
                      "display": {**res["display"], "verdict": "uncertain",
                                  "uncertain_reason": "unfamiliar", "unfamiliarity": "3.21"}}
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium,
                                         args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url + "/")
            page.set_input_files("#file", str(wav))
            page.wait_for_selector("#result:not([hidden])", timeout=60000)
            assert page.inner_text("#unfamiliarity").startswith("not measured")
            page.route("**/predict*", lambda route: route.fulfill(json={
                "model": {}, "results": [unfamiliar]}))
            page.set_input_files("#file", str(wav))
            page.wait_for_function("document.getElementById('verdict').dataset.reason"
                                   " == 'unfamiliar'")
            side = res["label"].upper()
            assert page.inner_text("#verdict") == (
                "UNCERTAIN: unlike the recordings this detector was trained on "
                f"(unfamiliarity 3.21), leaning {side}")
            assert page.inner_text("#unfamiliarity").startswith("3.21 (above 1")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_evaluate_reports_what_abstaining_buys(fitted_run, demo_features, tmp_path, capsys):
    """evaluate.py on a fitted run: the share answered (most familiar first) and the EER and
    accuracy on it, at fixed coverages and at the fit's own threshold (unfamiliarity <= 1)."""
    import evaluate

    run, _ = fitted_run
    metrics = evaluate.main(["--run", str(run), "--data", str(demo_features["dev"]),
                             "--out", str(tmp_path / "eval"), "--no-plots"])
    sel = metrics["selective"]
    cov = [r["coverage"] for r in sel["levels"]]
    assert cov[0] == 1.0 and cov == sorted(cov, reverse=True) and cov[-1] == pytest.approx(
        0.5, abs=0.05)
    assert [r["n"] for r in sel["levels"]][0] == metrics["n"]["total"]
    tops = [r["max_unfamiliarity"] for r in sel["levels"]]
    assert tops == sorted(tops, reverse=True)  # fewer answered: only the more familiar
    assert sel["levels"][0]["eer"] == pytest.approx(metrics["eer"])
    assert 0 < sel["at_fit"]["n"] <= metrics["n"]["total"]
    assert sel["at_fit"]["max_unfamiliarity"] <= 1
    out = capsys.readouterr().out
    assert "answered vs left uncertain" in out and "<= 1" in out
    saved = json.loads((tmp_path / "eval" / "selective.json").read_text())
    assert saved["levels"][0]["n"] == metrics["n"]["total"]
