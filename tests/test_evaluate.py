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


def test_evaluate_heldout_and_other_partition(trained_run, demo_features, capsys):
    m = evaluate.main(["--run", str(trained_run)])
    out = trained_run / "eval" / "heldout"
    assert m["n"] == {"total": 5, "bonafide": 3, "spoof": 2}
    split = pd.read_csv(trained_run / "split.csv")
    pred = pd.read_csv(out / "predictions.csv")
    assert set(pred["utt_id"]) == set(split.loc[split["part"] == "val", "utt_id"])
    assert np.isfinite(pred["score"]).all()
    np.testing.assert_allclose(pred["p_spoof"], 1 / (1 + np.exp(pred["score"])), atol=1e-9)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["positive_class"].startswith("spoof")
    assert len(saved["sweep"]) == 99 and len(pd.read_csv(out / "thresholds.csv")) == 99
    for point in saved["operating_points"].values():
        assert all(np.isfinite(point[k]) for k in ("accuracy", "precision", "recall", "f1"))
    text = capsys.readouterr().out
    assert "positive class = spoof" in text and "best_f1" in text

    m = evaluate.main(["--run", str(trained_run), "--data", str(demo_features["dev"]),
                       "--threshold", "0.3"])
    assert m["n"] == {"total": 12, "bonafide": 6, "spoof": 6}
    assert m["operating_points"]["chosen"]["threshold"] == 0.3
    assert (trained_run / "eval" / "dev" / "metrics.json").exists()


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
    assert m["data"] == str((tmp_path / "dev").resolve())
    pred = pd.read_csv(run / "eval" / "heldout" / "predictions.csv", keep_default_na=False)
    assert sorted(pred["attack"].unique()) == ["-", "A01", "A02", "A03", "A04", "A05", "A06"]
