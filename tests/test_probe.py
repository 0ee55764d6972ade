"""deepfake_detector.training.probe and train_offline.py's default recipe (issue 33): the linear
probe chosen out of domain, written as a run folder that predict.py scores like any other run."""

import json

import numpy as np
import pytest

import train_offline
from deepfake_detector.training import probe


def blobs(n=60, d=16, seed=0):
    """Two shifted Gaussian classes on an uneven scale: (x (n, d), y (n,))."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, d)) * np.linspace(0.5, 20, d) + 100 + y[:, None] * 3.0
    return x, y


def test_the_folded_output_layer_is_the_probe_and_its_threshold_the_held_out_eer():
    x, y = blobs()
    fitted = probe.fit_probe(x, y, seed=0, c=0.1)
    kernel, bias = probe.output_weights(fitted["probe"])
    assert kernel.shape == (16, 1) and bias.shape == (1,)
    np.testing.assert_allclose(x @ kernel[:, 0] + bias[0],
                               fitted["probe"].decision_function(x), rtol=1e-4, atol=1e-4)
    fit, val = fitted["fit_rows"], fitted["val_rows"]
    assert len(val) == 12 and not set(fit) & set(val) and len(fit) + len(val) == 60
    assert np.bincount(y[val]).tolist() == [6, 6]  # stratified
    p = fitted["probe"].predict_proba(x[val])[:, 1]
    flagged = np.mean(p[y[val] == 0] >= fitted["threshold"])
    missed = np.mean(p[y[val] == 1] < fitted["threshold"])
    assert abs(flagged - missed) <= 1 / 6  # the EER point of the held-out rows


def test_a_smaller_c_is_a_simpler_probe_and_too_few_recordings_are_refused():
    x, y = blobs()
    norms = [np.linalg.norm(probe.fit_probe(x, y, c=c)["probe"][-1].coef_) for c in
             (1.0, 1e-2, 1e-4)]
    assert norms[0] > norms[1] > norms[2] > 0
    with pytest.raises(ValueError, match="4 spoof recordings: the probe needs at least 5"):
        probe.fit_probe(x[:34], y[:34])


def test_the_default_recipe_writes_a_run_that_predict_scores_as_the_probe(
        demo_corpus, tmp_path, monkeypatch, capsys):
    """train_offline.py without a recipe flag: embeddings cached in the work folder, a linear
    probe, a run folder (EER threshold of its held-out part, familiarity reference, the default
    window rule) whose Keras graph reproduces the embedding: predict's P(spoof) of a file is the
    probe's on that file's embedding; a second call refuses the finished run, and with
    --overwrite reuses every embedding."""
    pytest.importorskip("keras_hub", reason="the probe needs requirements-whisper.txt")
    import keras

    from deepfake_detector import inference
    from deepfake_detector.models import whisper

    real = whisper.whisper_encoder

    def seeded(preset):  # the untrained encoder, the same each time it is built
        keras.utils.set_random_seed(0)
        return real(preset)

    monkeypatch.setattr(whisper, "whisper_encoder", seeded)
    work, run = tmp_path / "work", tmp_path / "run"
    argv = ["--dataset-root", str(demo_corpus), "--run", str(run), "--work", str(work),
            "--piper", "0", "--preset", "random:mini", "--c", "1"]
    with pytest.warns(UserWarning, match="the threshold rests on 2 held-out (bonafide|spoof) "
                                         "recordings: it is rough"):
        cal = train_offline.main(argv)
    assert cal["method"] == "eer" and 0 < cal["threshold"] < 1
    out = capsys.readouterr().out
    assert "[4/4] linear probe fitted on 19 recordings" in out
    assert "(EER point of 5 held out: 2 bonafide, 3 spoof)" in out or \
        "(EER point of 5 held out: 3 bonafide, 2 spoof)" in out
    config = json.loads((run / "config.json").read_text())
    assert config["head"] == {"kind": "linear probe", "C": 1.0}
    assert config["split"] == {"train": 19, "validation": 5}
    assert json.loads((run / "threshold.json").read_text())["best"]["threshold"] == \
        cal["threshold"]
    detector = inference.Detector(run)
    assert detector.aggregate == "run:4" and detector.familiarity is not None
    assert detector.uncertain_margin == probe.UNCERTAIN_MARGIN
    assert detector.threshold == pytest.approx(cal["threshold"])
    assert detector.identity()["threshold_calibrated"] is True  # an EER point, labelled data
    files = sorted((demo_corpus / "ASVspoof2019_LA_train" / "flac").glob("*.flac"))[:3]
    x = probe.cached_embeddings(files, "random:mini", work, progress=False)[:, 0]
    kernel, bias = (np.asarray(w) for w in detector.model.get_layer("p_spoof").weights)
    want = 1 / (1 + np.exp(-(x @ kernel[:, 0] + bias[0])))
    results = [inference.score_one(f, detector)[0] for f in files]
    np.testing.assert_allclose([r["p_spoof"] for r in results], want, rtol=1e-3, atol=1e-4)
    for r in results:  # the run's own band around its threshold
        near = abs(r["p_spoof"] - r["threshold"]) < probe.UNCERTAIN_MARGIN
        assert (r["display"]["uncertain_reason"] == "near_threshold") == (
            near and not r["unfamiliar"])
        assert r["display"]["uncertain_margin"] == f"{probe.UNCERTAIN_MARGIN:g}"
    with pytest.raises(SystemExit, match="already holds a finished run"):
        train_offline.main(argv)
    calls = []
    monkeypatch.setattr(probe, "embed", lambda *a, **k: calls.append(a))
    assert train_offline.main(argv + ["--overwrite"])["threshold"] == cal["threshold"]
    assert calls == []  # every embedding reused from the work folder


def test_the_fused_run_follows_aasist_where_its_gate_trusts_it_and_the_probe_elsewhere(
        demo_corpus, tmp_path, monkeypatch):
    """train_offline.py --fuse RUN: one Keras model whose P(spoof) of a file is the gated
    formula (`probe.fused_logits`) of the probe, the gate and the expert AASIST; the gate,
    fitted on the ASVspoof 2019 recordings against the others, sends the demo corpus (of the
    2019 layout) to the expert and other recordings to the probe; the run loads as any run,
    with its familiarity reference, and its threshold is the fused decision at 0."""
    pytest.importorskip("keras_hub", reason="the probe needs requirements-whisper.txt")
    import keras
    from scipy.special import expit, logit

    from conftest import tone, write_wav
    from deepfake_detector import features, inference, runs
    from deepfake_detector import models as M
    from deepfake_detector.models import aasist, whisper

    real = whisper.whisper_encoder

    def seeded(preset):
        keras.utils.set_random_seed(0)
        return real(preset)

    monkeypatch.setattr(whisper, "whisper_encoder", seeded)
    keras.utils.set_random_seed(1)
    expert = aasist.build_aasist("AASIST-L")
    params = features.feature_params("window", "waveform", aasist.SAMPLES)
    (tmp_path / "expert").mkdir()
    M.save_model_atomic(expert, tmp_path / "expert" / "best.keras", {
        "features": params, "labels": runs.LABELS, "input": M.input_spec("aasist", params),
        "model": "aasist", "run": "expert", "trained_on": {"data": [], "synthetic_demo": False}})
    other = tmp_path / "other"
    other.mkdir()
    rows = []
    for i in range(12):
        write_wav(other / f"o{i}.wav", tone(2.0, freq=300 + 40 * i, seed=i))
        rows.append(f"o{i}.wav,{'bonafide' if i % 2 else 'spoof'}\n")
    (other / "labels.csv").write_text("file,label\n" + "".join(rows))
    work, run = tmp_path / "work", tmp_path / "run"
    cal = train_offline.main(["--dataset-root", str(demo_corpus), "--extra",
                              str(other / "labels.csv"), "--run", str(run), "--work", str(work),
                              "--piper", "0", "--preset", "random:mini", "--fuse",
                              str(tmp_path / "expert")])
    assert cal["method"] == "gated" and cal["threshold"] == 0.5
    config = json.loads((run / "config.json").read_text())
    assert config["head"]["gate_at"] == probe.GATE_AT
    assert config["features"]["clip_samples"] == aasist.SAMPLES

    # the same fit again, from the cached embeddings, gives the formula to compare with
    protocol, audio = train_offline.protocols.resolve_2019_layout(demo_corpus, "train")
    table = train_offline.read_labelled([(protocol, audio, None),
                                         train_offline.extra_part(other / "labels.csv")])
    x = probe.cached_embeddings(list(table["path"]), "random:mini", work, progress=False)[:, 0]
    fitted = probe.fit_probe(x, train_offline.protocols.targets(table["label"]))
    domain = (table["format"] == "asvspoof2019").to_numpy()
    gate = probe.fit_gate(x, domain)
    g = gate.predict_proba(x)[:, 1]
    assert (g[domain] > probe.GATE_AT).mean() > 0.9 and (g[~domain] < 0.5).mean() > 0.9
    picks = [0, 1, len(table) - 2, len(table) - 1]  # two demo files, two others
    windows = np.stack([features.fit_length(features.load_audio(table["path"][i]),
                                            aasist.SAMPLES) for i in picks])
    windows = np.round(windows * 32768).clip(-32768, 32767) / 32768  # as predict.py reads
    z_expert = logit(np.clip(np.asarray(expert(windows.astype(np.float32)))[:, 0], 1e-7,
                             1 - 1e-7))
    want = expit(probe.fused_logits(fitted, gate, x[picks], z_expert))
    detector = inference.Detector(run)
    assert detector.threshold_source.startswith("the fused decision at 0")
    assert detector.identity()["threshold_calibrated"] is False
    got = [inference.score_one(table["path"][i], detector)[0] for i in picks]
    np.testing.assert_allclose([r["p_spoof"] for r in got], want, rtol=1e-2, atol=2e-3)
    assert detector.familiarity is not None and all(np.isfinite(r["unfamiliarity"])
                                                    for r in got)
    with pytest.raises(ValueError, match="own training corpus"):
        probe.fit_gate(x, np.ones(len(x)))


def test_the_page_works_with_the_recommended_probe_run(demo_corpus, tmp_path):
    """Issue 34, item 1: the page driven in Chromium with the run README recommends (a linear
    probe on a Whisper encoder; the untrained mini one here). The model is named before an
    upload; the verdict, its rule (4 consecutive windows, all of them in a shorter recording)
    with the windows that decided, and Whisper's own log-mel with its axes are shown, with no
    error."""
    pytest.importorskip("keras_hub", reason="the probe needs requirements-whisper.txt")
    import base64

    import soundfile as sf

    import test_serve
    from deepfake_detector.models import whisper

    if not test_serve.CHROMIUM and not __import__("os").environ.get("CI"):
        pytest.skip("no system Chromium (CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="the threshold rests on"):
        train_offline.main(["--dataset-root", str(demo_corpus), "--run", str(run), "--work",
                            str(tmp_path / "work"), "--piper", "0", "--preset", "random:mini"])
    flacs = sorted((demo_corpus / "ASVspoof2019_LA_dev" / "flac").glob("*.flac"))
    joined = np.concatenate([sf.read(str(f))[0] for f in flacs[:4]])
    sf.write(str(tmp_path / "joined.wav"), joined, 16000)
    url, proc = test_serve.start_server(run, tmp_path / "serve.log")
    try:
        r = test_serve.post(url, "joined.wav", (tmp_path / "joined.wav").read_bytes(),
                            spectrogram="true")
        assert r.status_code == 200, r.text
        res = r.json()["results"][0]
        assert res["aggregate"] == "run:4" and res["windows_scored"] >= 2
        k = min(4, res["windows_scored"])  # 4 consecutive windows, all of them when fewer
        assert len(res["deciding_windows"]) == k and np.ptp(res["deciding_windows"]) == k - 1
        png = base64.b64decode(res["spectrogram_png"])
        assert int.from_bytes(png[20:24], "big") == whisper.WHISPER_MELS  # Whisper's log-mel
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=test_serve.CHROMIUM,
                                         args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('loaded').textContent"
                                   ".startsWith('Model: ')")
            assert page.inner_text("#loaded").startswith("Model: run (best.keras), ")
            assert "windows joined by 4 consecutive windows (about 10 s)" in page.inner_text(
                "#loaded")
            page.set_input_files("#file", str(tmp_path / "joined.wav"))
            page.wait_for_selector("#result:not([hidden])", timeout=120000)
            assert page.inner_text("#error") == ""
            assert page.get_attribute("#verdict", "data-label") == res["label"]
            assert page.inner_text("#rule").startswith("4 consecutive windows")
            assert page.locator("#timeline line.window.decided").count() == k
            assert page.evaluate("document.getElementById('spectrogram').naturalHeight") == \
                whisper.WHISPER_MELS
            assert page.text_content("#spectime") == "time (s)"
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
