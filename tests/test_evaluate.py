"""evaluate.py: metrics by hand, threshold sweep, feature drift refusal, the whole pipeline."""

import json

import numpy as np
import pandas as pd
import pytest

import evaluate
import preprocess
import train
from conftest import MINI_LA, needs_mini

Y = np.array([0, 0, 1, 1, 1])  # 1 = spoof
P = np.array([0.1, 0.6, 0.4, 0.8, 0.9])  # P(spoof)


def test_metrics_worked_by_hand_spoof_is_positive():
    m = evaluate.binary_metrics(Y, P, 0.5)  # predicted spoof: items 1, 3, 4
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)  # of 3 flagged, 2 are spoof
    assert m["recall"] == pytest.approx(2 / 3)  # of 3 spoofs, 2 flagged
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["bonafide_recall"] == pytest.approx(1 / 2)


def test_threshold_is_inclusive_and_extremes():
    assert evaluate.binary_metrics(Y, P, 0.4)["tp"] == 3  # p >= t is spoof
    m = evaluate.binary_metrics(Y, P, 0.95)  # nothing flagged
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_sweep_and_best_f1():
    table = evaluate.threshold_sweep(Y, P, [0.05, 0.3, 0.5, 0.7])
    assert list(table["threshold"]) == [0.05, 0.3, 0.5, 0.7]
    # 0.05: all spoof -> P 3/5, R 1, F1 .75; 0.3: 4 flagged, 3 right -> F1 6/7
    np.testing.assert_allclose(table["f1"], [0.75, 6 / 7, 2 / 3, 0.8])
    best = evaluate.best_f1(table)
    assert best["threshold"] == 0.3 and best["f1"] == pytest.approx(6 / 7)


@pytest.mark.parametrize("bona, spoof, eer, threshold", [
    ([3, 4], [1, 2], 0.0, 3),  # perfectly separated: threshold at the lowest bonafide score
    ([1, 2, 2], [0, 2], 5 / 12, 2),  # a tie at 2: miss 1/3, false alarm 1/2 -> mean 5/12
    ([5, 5, 5], [5, 5], 0.5, 5),  # all equal: accept all (fa 1) or reject all (miss 1)
    ([0, 1], [2, 3], 1.0, 2),  # swapped direction
    ([0.1, 0.4, 0.35, 0.8], [0.2, 0.3, 0.5, 0.45], 0.5, 0.4),
])
def test_eer_worked_by_hand(bona, spoof, eer, threshold):
    got, thr = evaluate.compute_eer(bona, spoof)
    assert got == pytest.approx(eer) and thr == threshold


def test_eer_is_invariant_to_increasing_transforms():
    rng = np.random.default_rng(0)
    bona, spoof = rng.normal(1, 1, 300), rng.normal(-1, 1.5, 900)
    spoof[:50] = bona[:50]  # some exact ties across classes
    eer = evaluate.compute_eer(bona, spoof)[0]
    assert 0.1 < eer < 0.3
    for f in (np.exp, np.arctan, lambda x: 3 * x + 7, lambda x: x ** 3):
        assert evaluate.compute_eer(f(bona), f(spoof))[0] == pytest.approx(eer, abs=1e-12)


def test_eer_matches_a_brute_force_sweep():
    rng = np.random.default_rng(1)
    bona, spoof = rng.normal(0.5, 1, 200), rng.normal(-0.5, 1, 500)
    best = min(((abs(np.mean(bona < t) - np.mean(spoof >= t)),
                 (np.mean(bona < t) + np.mean(spoof >= t)) / 2)
                for t in np.concatenate([bona, spoof])))
    assert evaluate.compute_eer(bona, spoof)[0] == pytest.approx(best[1])


def asv_table(tar, non, spoof, source="A01"):
    rows = [("bonafide", "target", s) for s in tar] + [("bonafide", "nontarget", s) for s in non]
    rows += [(source, "spoof", s) for s in spoof]
    return pd.DataFrame(rows, columns=["source", "key", "score"])


def test_min_tdcf_worked_by_hand():
    # ASV separates targets [2, 3] from nontargets [0, 1] at threshold 2: P_miss = P_fa = 0,
    # and misses half the spoofs [1.5, 2.5]. C1 = P_tar = 0.9405, C2 = 10 * 0.05 * 0.5 = 0.25.
    asv = asv_table([2, 3], [0, 1], [1.5, 2.5])
    r = evaluate.min_tdcf([1.0, 0.8], [0.2, 0.9], asv)
    assert (r["p_miss_asv"], r["p_fa_asv"], r["p_miss_spoof_asv"]) == (0, 0, 0.5)
    assert r["c1"] == pytest.approx(0.95 * 0.99) and r["c2"] == pytest.approx(0.25)
    # CM thresholds 0.2, 0.8, 0.9, 1.0, inf give (P_miss, P_fa) = (0, 1), (0, .5), (.5, .5),
    # (.5, 0), (1, 0); normalized costs 1, 0.5, 2.381, 1.881, 3.762 -> min 0.5 at 0.8
    assert r["min_tdcf"] == pytest.approx(0.5) and r["threshold"] == 0.8
    perfect = evaluate.min_tdcf([2.0, 3.0], [0.0, 1.0], asv)
    assert perfect["min_tdcf"] == 0.0


def test_min_tdcf_refuses_undefined_costs():
    asv = asv_table([2, 3], [0, 1], [0.5, 0.7])  # ASV rejects every spoof: C2 = 0
    with pytest.raises(ValueError, match="C2=0"):
        evaluate.min_tdcf([1.0], [0.0], asv)


def test_asv_and_cm_score_files(tmp_path):
    bad = tmp_path / "asv.txt"
    bad.write_text("bonafide target 1.0\nbonafide maybe 2.0\n")
    with pytest.raises(ValueError, match="asv.txt:2: expected"):
        evaluate.read_asv_scores(bad)
    bad.write_text("bonafide target 1.0\nbonafide nontarget 2.0\n")
    with pytest.raises(ValueError, match="no spoof trials"):
        evaluate.read_asv_scores(bad)
    cm = tmp_path / "cm.txt"
    cm.write_text("filename cm-score\nLA_E_1 A07 spoof -2.5\nLA_E_2 1e3\n")
    s = evaluate.read_score_file(cm)
    assert s.to_dict() == {"LA_E_1": -2.5, "LA_E_2": 1000.0}
    cm.write_text("LA_E_1 1\nLA_E_1 2\n")
    with pytest.raises(ValueError, match="'LA_E_1' is scored more than once"):
        evaluate.read_score_file(cm)


def report_table(bona, spoof, attacks=None):
    n_b, n_s = len(bona), len(spoof)
    score = np.array(list(bona) + list(spoof), dtype=float)
    return pd.DataFrame({"utt_id": [f"u{i}" for i in range(n_b + n_s)], "speaker": "s",
                         "attack": ["-"] * n_b + (attacks or ["A01"] * n_s),
                         "key": ["bonafide"] * n_b + ["spoof"] * n_s,
                         "score": score, "p_spoof": 1 / (1 + np.exp(score))})


def test_report_sanity_checks():
    with pytest.raises(ValueError, match="got only spoof"):
        evaluate.compute_report(report_table([], [1.0, 2.0]))
    t = report_table([1.0, 2.0], [0.0, np.nan])
    with pytest.raises(ValueError, match="NaN or inf, e.g. for 'u3'"):
        evaluate.compute_report(t)
    m, _, _ = evaluate.compute_report(report_table([-1.0, -2.0], [1.0, 2.0]))
    assert m["eer"] == 1.0 and "look swapped" in m["warnings"][0]


def test_per_attack_breakdown():
    t = report_table([2.0, 3.0], [0.0, 1.0, 2.5, 1.0], ["A01", "A01", "A02", "A02"])
    m, per_attack, _ = evaluate.compute_report(t, threshold=0.5)
    rows = per_attack.set_index("attack")
    assert list(rows.index) == ["bonafide", "A01", "A02"]
    assert rows.loc["A01", "eer"] == 0.0 and rows.loc["A02", "eer"] == 0.5
    # P(spoof) = sigmoid(-score): score 0 -> 0.5 (flagged, >= is inclusive), score 1 -> 0.27
    assert rows.loc["A01", "detected"] == 0.5
    assert rows.loc["A02", "detected"] == 0.0
    assert rows.loc["bonafide", "detected"] == 0.0 and rows.loc["bonafide", "n"] == 2
    assert m["eer"] == evaluate.compute_eer([2.0, 3.0], [0.0, 1.0, 2.5, 1.0])[0]


def test_feature_mismatch_names_the_parameters():
    a = preprocess.feature_params()
    b = dict(a, hop_length=512, n_mels=64)
    with pytest.raises(evaluate.FeatureMismatch, match="hop_length: model 500 vs data 512") as e:
        evaluate.check_features(a, b, "best.keras", "data/x")
    assert "n_mels" in str(e.value) and "data/x" in str(e.value)
    evaluate.check_features(a, dict(a))  # identical: no error


def test_logits_match_the_sigmoid_output(trained_run, demo_features):
    import data_loader

    model, meta, _ = evaluate.load_run(trained_run)
    df = data_loader.load_manifest(demo_features["dev"])
    ds = data_loader.make_dataset(df, 4, with_labels=False)
    logits = evaluate.predict_logits(model, ds)
    p = model.predict(ds, verbose=0).reshape(-1)
    assert logits.shape == (len(df),)
    np.testing.assert_allclose(evaluate.sigmoid(logits), p, atol=1e-6)


def test_evaluate_heldout_and_other_partition(trained_run, demo_features, demo_corpus, capsys):
    m = evaluate.main(["--run", str(trained_run)])
    out = trained_run / "eval" / "heldout"
    assert m["n"] == {"total": 5, "bonafide": 3, "spoof": 2}
    assert set(m["files"]) == {"metrics.json", "scores.txt", "predictions.csv", "per_attack.csv",
                               "thresholds.csv", *evaluate.PLOTS}
    for name in evaluate.PLOTS:
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
    assert saved["eer"] == pytest.approx(evaluate.compute_eer(
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
    protocol, _ = preprocess.resolve_2019_layout(demo_corpus, "dev")
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
    assert m["min_tdcf"]["p_miss_spoof_asv"] == 0.5 and m["min_tdcf"]["c2"] == pytest.approx(0.25)
    assert 0 <= m["min_tdcf"]["min_tdcf"] and np.isfinite(m["min_tdcf"]["min_tdcf"])
    by_attack = {r["attack"]: r["min_tdcf"] for r in m["per_attack"]}
    assert by_attack["D01"] is not None and by_attack["D02"] is None  # no ASV trials of D02


def test_evaluate_refuses_data_with_other_features(trained_run, demo_corpus, tmp_path):
    protocol, audio = preprocess.resolve_2019_layout(demo_corpus, "dev")
    preprocess.preprocess(protocol, audio, tmp_path / "resized", fit="resize", workers=1,
                          progress=False)
    with pytest.raises(SystemExit, match="other feature parameters.*fit: model 'window'"):
        evaluate.main(["--run", str(trained_run), "--data", str(tmp_path / "resized")])


def test_latest_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained run"):
        evaluate.find_latest_run(tmp_path)
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "model.keras").write_bytes(b"")
    assert evaluate.find_latest_run(tmp_path).name == "new"


@needs_mini
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
    out = run / "eval" / "heldout"
    for name in ("scores.txt", "predictions.csv", "metrics.json", *evaluate.PLOTS):
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
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["n"]["total"] == 5


# ----------------------------------------------------------------------------- calibration


def _scores(seed=0, n_bona=40, n_spoof=160):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_bona, int), np.ones(n_spoof, int)]
    score = np.r_[rng.normal(1.0, 1.0, n_bona), rng.normal(-1.0, 1.0, n_spoof)]
    return y, np.round(score, 1)  # rounding makes ties, which must stay together


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibrated_eer_threshold_reproduces_the_eer_point(seed):
    y, score = _scores(seed)
    cal = evaluate.calibrate_threshold(y, score, "eer")
    t = cal["score_threshold"]
    assert not np.any(score == t)  # no utterance sits on the threshold
    flagged = np.mean(score[y == 0] < t)  # bonafide called spoof
    missed = np.mean(score[y == 1] >= t)  # spoof called bonafide
    eer, _ = evaluate.compute_eer(score[y == 0], score[y == 1])
    assert flagged == pytest.approx(cal["bonafide_flagged"], abs=1e-12)
    assert missed == pytest.approx(cal["spoof_missed"], abs=1e-12)
    assert (flagged + missed) / 2 == pytest.approx(eer) == cal["eer"]
    # the same decision on P(spoof), as evaluate.py and predict.py apply it
    p = evaluate.sigmoid(-score)
    np.testing.assert_array_equal(p >= cal["threshold"], score < t)


def test_calibrated_f1_and_false_alarm_thresholds():
    y, score = _scores(3)
    f1 = evaluate.calibrate_threshold(y, score, "f1")
    best = max(evaluate.classification_metrics(y, score < t)["f1"]
               for t in np.r_[np.unique(score), np.inf])  # brute force over every threshold
    assert evaluate.classification_metrics(y, score < f1["score_threshold"])["f1"] == best
    for rate in (0.0, 0.05, 0.2):
        far = evaluate.calibrate_threshold(y, score, f"far:{rate}")
        pred = score < far["score_threshold"]
        assert np.mean(pred[y == 0]) <= rate  # at most RATE of bonafide flagged
        # and no higher threshold keeps that promise while catching more spoofs
        higher = np.unique(score)[np.unique(score) > far["score_threshold"]]
        if higher.size:
            assert np.mean(score[y == 0] < higher[0] + 1e-9) > rate
    for bad in ("median", "far:2", "far:x"):
        with pytest.raises(ValueError, match="expected eer, f1, far:RATE"):
            evaluate.calibrate_threshold(y, score, bad)
