"""evaluate.py and report.py: the report from scores, per attack, score files, the pipeline."""

import json

import numpy as np
import pandas as pd
import pytest

import evaluate
from deepfake_detector.evaluation import metrics
from deepfake_detector.evaluation import plots
import preprocess
from deepfake_detector import protocols
from deepfake_detector.evaluation import report
from deepfake_detector import runs
import train
from conftest import MINI_LA, needs_mini


def report_table(bona, spoof, attacks=None):
    n_b, n_s = len(bona), len(spoof)
    score = np.array(list(bona) + list(spoof), dtype=float)
    return pd.DataFrame({"utt_id": [f"u{i}" for i in range(n_b + n_s)], "speaker": "s",
                         "attack": ["-"] * n_b + (attacks or ["A01"] * n_s),
                         "label": ["bonafide"] * n_b + ["spoof"] * n_s,
                         "score": score, "p_spoof": 1 / (1 + np.exp(score))})


def test_report_sanity_checks():
    with pytest.raises(ValueError, match="got only spoof"):
        report.compute_report(report_table([], [1.0, 2.0]))
    t = report_table([1.0, 2.0], [0.0, np.nan])
    with pytest.raises(ValueError, match="NaN or inf, e.g. for 'u3'"):
        report.compute_report(t)
    m, _, _ = report.compute_report(report_table([-1.0, -2.0], [1.0, 2.0]))
    assert m["eer"] == 1.0 and "look swapped" in m["warnings"][0]


def test_per_attack_breakdown():
    t = report_table([2.0, 3.0], [0.0, 1.0, 2.5, 1.0], ["A01", "A01", "A02", "A02"])
    m, per_attack, _ = report.compute_report(t, threshold=0.5)
    rows = per_attack.set_index("attack")
    assert list(rows.index) == ["bonafide", "A01", "A02"]
    assert rows.loc["A01", "eer"] == 0.0 and rows.loc["A02", "eer"] == 0.5
    # P(spoof) = sigmoid(-score): score 0 -> 0.5 (flagged, >= is inclusive), score 1 -> 0.27
    assert rows.loc["A01", "detected"] == 0.5
    assert rows.loc["A02", "detected"] == 0.0
    assert rows.loc["bonafide", "detected"] == 0.0 and rows.loc["bonafide", "n"] == 2
    assert m["eer"] == metrics.compute_eer([2.0, 3.0], [0.0, 1.0, 2.5, 1.0])[0]


def test_evaluate_heldout_and_other_partition(trained_run, demo_features, demo_corpus, capsys):
    m = evaluate.main(["--run", str(trained_run)])
    out = trained_run / "eval" / "validation"
    assert m["n"] == {"total": 5, "bonafide": 3, "spoof": 2}
    assert set(m["files"]) == {"metrics.json", "scores.txt", "scores_2019.txt", "predictions.csv",
                               "per_attack.csv", "thresholds.csv", *plots.PLOTS}
    for name in plots.PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = pd.read_csv(trained_run / "split.csv")
    pred = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(pred.columns) == ["utt_id", "speaker", "attack", "key", "score", "p_spoof",
                                  "predicted"]
    assert set(pred["utt_id"]) == set(split.loc[split["part"] == "val", "utt_id"])
    assert np.isfinite(pred["score"]).all()
    np.testing.assert_allclose(pred["p_spoof"], 1 / (1 + np.exp(pred["score"])), atol=1e-9)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["conventions"]["positive_class"].startswith("spoof")
    assert saved["min_tdcf"]["min_tdcf"] is None and "no ASV scores" in saved["min_tdcf"]["reason"]
    assert saved["eer"] == pytest.approx(metrics.compute_eer(
        pred.loc[pred["key"] == "bonafide", "score"], pred.loc[pred["key"] == "spoof", "score"])[0])
    assert len(saved["sweep"]) == 99 and len(pd.read_csv(out / "thresholds.csv")) == 99
    assert set(saved["operating_points"]) == {"0.5", "calibrated", "best_f1", "eer", "chosen"}
    assert saved["threshold"]["source"].startswith("calibrated on the run's validation data")
    assert saved["operating_points"]["chosen"] == saved["operating_points"]["calibrated"]
    for point in saved["operating_points"].values():
        assert all(np.isfinite(point[k]) for k in ("accuracy", "precision", "recall", "f1"))
    text = capsys.readouterr().out
    assert "positive class = spoof" in text and "pooled EER" in text and "best_f1" in text

    m = evaluate.main(["--run", str(trained_run), "--data", str(demo_features["dev"]),
                       "--threshold", "0.3"])
    assert m["n"] == {"total": 12, "bonafide": 6, "spoof": 6}
    assert m["operating_points"]["chosen"]["threshold"] == 0.3
    assert [r["attack"] for r in m["per_attack"]] == ["bonafide", "D01", "D02"]
    assert [r["n"] for r in m["per_attack"]] == [6, 3, 3]

    # the score file alone, with the protocol, gives the same numbers
    protocol, _ = protocols.resolve_2019_layout(demo_corpus, "dev")
    scores = trained_run / "eval" / "dev" / "scores.txt"
    s = evaluate.main(["--scores", str(scores), "--protocol", str(protocol), "--threshold", "0.3",
                       "--no-plots"])
    assert s["eer"] == m["eer"] and s["eer_threshold"] == m["eer_threshold"]
    assert s["per_attack"] == m["per_attack"] and s["roc_auc"] == m["roc_auc"]
    assert s["operating_points"] == {k: v for k, v in m["operating_points"].items()
                                     if k != "calibrated"}  # a score file has no run
    assert (trained_run / "eval" / "dev" / "scores_eval" / "metrics.json").exists()


def test_min_tdcf_per_attack_with_asv_scores(trained_run, demo_features, tmp_path):
    asv = tmp_path / "asv.txt"
    asv.write_text("bonafide target 3.0\nbonafide target 2.0\nbonafide nontarget 0.0\n"
                   "bonafide nontarget 1.0\nD01 spoof 1.5\nD01 spoof 2.5\n")
    m = evaluate.main(["--run", str(trained_run), "--data", str(demo_features["dev"]),
                       "--asv-scores", str(asv), "--out", str(tmp_path / "o"), "--no-plots"])
    # the official ASV operating point: threshold 1 (the last rejected nontarget), both D01
    # spoofs accepted (P_miss_spoof_asv 0, C2 = 10 x 0.05), one nontarget accepted of two
    assert m["min_tdcf"]["asv_threshold"] == 1.0 and m["min_tdcf"]["p_fa_asv"] == 0.5
    assert m["min_tdcf"]["p_miss_spoof_asv"] == 0.0 and m["min_tdcf"]["c2"] == pytest.approx(0.5)
    assert 0 <= m["min_tdcf"]["min_tdcf"] and np.isfinite(m["min_tdcf"]["min_tdcf"])
    by_attack = {r["attack"]: r for r in m["per_attack"]}
    assert by_attack["D01"]["min_tdcf"] is not None
    assert by_attack["D02"]["min_tdcf"] is None  # no ASV trials of D02: undefined, and why
    assert "no ASV scores of spoof trials" in by_attack["D02"]["min_tdcf_note"]
    assert not any("ASV score file" in w for w in m["warnings"])


def test_an_asv_file_of_other_attacks_is_warned_about(trained_run, demo_features, tmp_path):
    """An ASV score file matching none of the scored attacks (the 2019 eval ASV file beside a
    dev run) used to give a pooled min t-DCF without a word."""
    asv = tmp_path / "asv.txt"
    asv.write_text("bonafide target 3.0\nbonafide target 2.0\nbonafide nontarget 0.0\n"
                   "bonafide nontarget 1.0\nA13 spoof 1.5\nA17 spoof 2.5\n")
    m = evaluate.main(["--run", str(trained_run), "--data", str(demo_features["dev"]),
                       "--asv-scores", str(asv), "--out", str(tmp_path / "o"), "--no-plots"])
    assert any("A13, A17, none of which is scored here (D01, D02)" in w for w in m["warnings"])


def test_evaluate_refuses_data_with_other_features(trained_run, demo_corpus, tmp_path):
    protocol, audio = protocols.resolve_2019_layout(demo_corpus, "dev")
    preprocess.preprocess(protocol, audio, tmp_path / "resized", fit="resize", workers=1,
                          progress=False)
    with pytest.raises(SystemExit, match="other feature parameters.*fit: model 'window'"):
        evaluate.main(["--run", str(trained_run), "--data", str(tmp_path / "resized")])


def test_latest_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished run"):
        runs.find_latest_run(tmp_path)
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "model.keras").write_bytes(b"")
        (tmp_path / name / "threshold.json").write_text("{}")
    assert runs.find_latest_run(tmp_path).name == "new"
    # a newer run stopped before its threshold (a crash, a full disk) is not taken
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "config.json").write_text("{}")
    (tmp_path / "stopped" / "best.keras").write_bytes(b"")
    assert runs.find_latest_run(tmp_path).name == "new"
    assert not runs.is_finished(tmp_path / "stopped")


@needs_mini
@pytest.mark.slow
def test_genuine_mini_corpus_pipeline(tmp_path, capsys):
    """Acceptance: preprocess train and dev -> train --weights none --epochs 1 -> evaluate."""
    for split in ("train", "dev"):
        preprocess.main(["--dataset-root", str(MINI_LA), "--split", split,
                         "--out", str(tmp_path / split)])
    run = tmp_path / "run"
    train.main(["--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "dev"),
                "--run", str(run), "--weights", "none", "--epochs", "1", "--quiet"])
    m = evaluate.main(["--run", str(run)])
    assert m["n"] == {"total": 100, "bonafide": 50, "spoof": 50}
    assert m["source"]["data"] == str((tmp_path / "dev").resolve())
    out = run / "eval" / "validation"
    for name in ("scores.txt", "predictions.csv", "metrics.json", *plots.PLOTS):
        assert (out / name).stat().st_size > 0, name
    assert [r["attack"] for r in m["per_attack"]] == ["bonafide"] + [f"A0{i}" for i in range(1, 7)]
    assert all(0 <= r["eer"] <= 1 for r in m["per_attack"][1:])
    text = capsys.readouterr().out
    assert "pooled EER" in text and "A06" in text and "threshold sweep" in text
    protocol = MINI_LA / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    s = evaluate.main(["--scores", str(out / "scores.txt"), "--protocol", str(protocol),
                       "--no-plots", "--threshold", str(m["threshold"]["value"])])
    assert s["eer"] == m["eer"] and s["per_attack"] == m["per_attack"]


def test_cli_loads_the_model_in_a_fresh_process(trained_run, tmp_path):
    """The saved model holds a custom wrapper layer: loading must work without train.py having
    built a model in the same process (as `python evaluate.py` does)."""
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--run", str(trained_run), "--out", str(tmp_path / "o"),
         "--no-plots"], cwd=Path(evaluate.__file__).parent, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pooled EER" in proc.stdout
    # TensorFlow loaded, quietly: none of its CPU start-up chatter (model.load_tensorflow)
    assert not any(w in proc.stderr for w in ("cuInit", "cuda", "absl", "oneDNN")), proc.stderr
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["n"]["total"] == 5


# ----------------------------------------------------------------------------- calibration




# ----------------------------------------------------------------------------- score files


def test_partial_score_files_are_refused_unless_asked(trained_run, demo_features, demo_corpus,
                                                      tmp_path, capsys):
    m = evaluate.evaluate(trained_run, demo_features["dev"], plots=False, out=tmp_path / "full")
    lines = (tmp_path / "full" / "scores.txt").read_text().splitlines()
    half = tmp_path / "half.txt"
    half.write_text("\n".join(lines[:6] + ["NOT_IN_PROTOCOL 0.5"]) + "\n")
    protocol, _ = protocols.resolve_2019_layout(demo_corpus, "dev")
    with pytest.raises(SystemExit, match=r"scores 6 of the 12 trials .*\(6 trials have no score, "
                                         r"1 scores are not in the protocol"):
        evaluate.main(["--scores", str(half), "--protocol", str(protocol), "--no-plots"])
    capsys.readouterr()
    p = evaluate.main(["--scores", str(half), "--protocol", str(protocol), "--no-plots",
                       "--partial", "--out", str(tmp_path / "p")])
    assert p["n"]["total"] == 6 and p["source"]["coverage"] == {
        "scored": 6, "listed": 12, "unscored": 6, "unknown": 1, "partial": True,
        "note": "partial: 6 of 12 trials"}
    text = capsys.readouterr().out
    assert "6 listed trials without a score, 1 scores of unlisted utterances" in text
    for metric in ("pooled EER", "ROC AUC", "per attack", "operating points", "threshold sweep"):
        line = next(x for x in text.splitlines() if x.startswith(metric))
        assert "[partial: 6 of 12 trials]" in line, line
    saved = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert saved["source"]["coverage"]["note"] == "partial: 6 of 12 trials"
    assert m["source"]["coverage"]["partial"] is False  # a run's own scores cover every trial


def test_the_2019_score_file_of_a_run_gives_the_same_report(trained_run, demo_features,
                                                            demo_corpus, tmp_path):
    asv = tmp_path / "asv.txt"
    asv.write_text("bonafide target 3.0\nbonafide target 2.0\nbonafide target 2.5\n"
                   "bonafide nontarget 0.0\nbonafide nontarget 1.0\nD01 spoof 1.5\n"
                   "D01 spoof 2.7\nD02 spoof 0.5\nD02 spoof 2.2\n")
    m = evaluate.evaluate(trained_run, demo_features["dev"], plots=False, out=tmp_path / "run",
                          asv_scores=asv)
    four = tmp_path / "run" / "scores_2019.txt"
    first = four.read_text().splitlines()[0].split()
    assert len(first) == 4 and first[2] in ("bonafide", "spoof")
    protocol, _ = protocols.resolve_2019_layout(demo_corpus, "dev")
    s = evaluate.main(["--scores", str(four), "--protocol", str(protocol), "--no-plots",
                       "--asv-scores", str(asv), "--threshold", str(m["threshold"]["value"])])
    assert s["source"]["layout"] == "2019"
    assert s["eer"] == m["eer"] and s["per_attack"] == m["per_attack"]
    assert s["min_tdcf"]["min_tdcf"] == m["min_tdcf"]["min_tdcf"] is not None
    wrong = tmp_path / "wrong.txt"  # a 4-column file whose keys contradict the protocol
    wrong.write_text(four.read_text().replace("bonafide", "XX").replace("spoof", "bonafide")
                     .replace("XX", "spoof"))
    with pytest.raises(SystemExit, match="the key of .* says"):
        evaluate.main(["--scores", str(wrong), "--protocol", str(protocol), "--no-plots"])


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_unwritable_out_is_one_line_not_a_traceback(trained_run, tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "file" else blocker / "sub"
    with pytest.raises(SystemExit, match=r"error: cannot write the report: .*blocker"):
        evaluate.main(["--run", str(trained_run), "--out", str(out), "--no-plots"])
    assert blocker.read_text() == "a file, not a folder"
