"""train.py: the design-card model, weights handling, run folder, seeds, resume."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_detector import augment

from deepfake_detector import models as model
import train
from test_model import BACKBONE_PARAMS, HEAD_PARAMS


def test_failed_start_leaves_no_run_folder(monkeypatch, demo_features, tmp_path):
    import keras

    def offline(**kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.applications, "EfficientNetB0", offline)
    with pytest.raises(SystemExit, match="could not download the ImageNet weights"):
        train.main(["--data", str(demo_features["train"]), "--run", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_run_folder(trained_run, demo_features):
    files = {p.name for p in trained_run.iterdir()}
    assert {"model.keras", "best.keras", "config.json", "history.csv", "split.csv"} <= files
    assert "backup" not in files  # removed after a finished run
    config = json.loads((trained_run / "config.json").read_text())
    features = json.loads((demo_features["train"] / "features.json").read_text())
    assert config["features"] == features
    assert config["args"]["weights"] == "none" and config["args"]["epochs"] == 2
    assert config["args"]["seed"] == 42 and config["args"]["val_fraction"] == 0.2
    assert config["params"] == {"trainable": HEAD_PARAMS, "non_trainable": BACKBONE_PARAMS}
    assert config["counts"] == {"train": {"bonafide": 9, "spoof": 10},
                                "val": {"bonafide": 3, "spoof": 2}}
    assert "tensorflow" in config["versions"]
    history = pd.read_csv(trained_run / "history.csv")
    assert list(history["epoch"]) == [0, 1] and np.isfinite(history["val_loss"]).all()
    split = pd.read_csv(trained_run / "split.csv")
    assert (split["part"] == "val").sum() == 5 and (split["part"] == "train").sum() == 19
    for name in ("model.keras", "best.keras"):
        meta = model.read_model_meta(trained_run / name)
        assert meta["features"] == features and meta["labels"]["output"] == "P(spoof)"


def test_refuses_to_overwrite_a_finished_run(trained_run, demo_features):
    with pytest.raises(SystemExit, match="already holds a finished run"):
        train.main(["--data", str(demo_features["train"]), "--run", str(trained_run),
                    "--weights", "none", "--epochs", "1"])


def test_same_seed_same_run(demo_features, tmp_path):
    args = dict(data=demo_features["train"], weights="none", epochs=1, batch_size=8, verbose=0)
    _, h1 = train.train(run_dir=tmp_path / "a", seed=5, **args)
    _, h2 = train.train(run_dir=tmp_path / "b", seed=5, **args)
    np.testing.assert_array_equal(h1["loss"], h2["loss"])
    np.testing.assert_array_equal(h1["val_loss"], h2["val_loss"])
    split_a = pd.read_csv(tmp_path / "a" / "split.csv")
    split_b = pd.read_csv(tmp_path / "b" / "split.csv")
    assert split_a.equals(split_b)


def test_interrupted_run_resumes(demo_features, tmp_path, capsys):
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("power cut")

    run = tmp_path / "r"
    args = dict(data=demo_features["train"], weights="none", epochs=3, batch_size=8, verbose=0)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(run_dir=run, callbacks=[Crash()], **args)
    assert not (run / "model.keras").exists() and (run / "backup").exists()
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [0, 1]
    _, history = train.train(run_dir=run, **args)
    assert "resuming" in capsys.readouterr().err
    assert list(history["epoch"]) == [0, 1, 2]
    assert (run / "model.keras").exists() and not (run / "backup").exists()


# ----------------------------------------------------------------------------- feature cache


def test_cached_and_plain_training_give_the_same_run(informative_weights, demo_features,
                                                     tmp_path):
    """Tolerance: loss curves within 1e-5 relative, predictions within 1e-4 (float noise of
    different batchings of the same backbone pass)."""
    import data_loader

    args = dict(data=demo_features["train"], val_data=demo_features["dev"],
                weights=informative_weights, epochs=2, batch_size=8, verbose=0, seed=3)
    _, h_cached = train.train(run_dir=tmp_path / "cached", cache_dir=tmp_path / "cache", **args)
    _, h_plain = train.train(run_dir=tmp_path / "plain", feature_cache=False, **args)
    assert h_cached["loss"].std() > 1e-3  # the curve moves: the comparison means something
    np.testing.assert_allclose(h_cached["loss"], h_plain["loss"], rtol=1e-5)
    np.testing.assert_allclose(h_cached["val_loss"], h_plain["val_loss"], rtol=1e-5)
    cfg = [json.loads((tmp_path / r / "config.json").read_text()) for r in ("cached", "plain")]
    assert (cfg[0]["args"]["feature_cache"], cfg[1]["args"]["feature_cache"]) == (True, False)

    import keras

    df = data_loader.load_manifest(demo_features["dev"])
    ds = data_loader.make_dataset(df, 16, with_labels=False)
    p = [keras.models.load_model(tmp_path / r / "model.keras", compile=False).predict(ds, verbose=0)
         for r in ("cached", "plain")]
    np.testing.assert_allclose(p[0], p[1], atol=1e-4)

    caches = sorted((tmp_path / "cache").rglob("*.npy"))
    assert [c.parent.name for c in caches] == ["dev", "train"]
    assert np.load(caches[1]).shape == (24, 1280)
    stamp = [c.stat().st_mtime_ns for c in caches]
    train.train(run_dir=tmp_path / "again", cache_dir=tmp_path / "cache", **{**args, "seed": 4})
    assert [c.stat().st_mtime_ns for c in caches] == stamp  # reused, not recomputed


def test_mirrored_strategy_on_two_logical_cpus(demo_features, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "mirrored"
    proc = subprocess.run(
        [sys.executable, "train.py", "--data", str(demo_features["train"]), "--run", str(run),
         "--weights", "none", "--epochs", "2", "--batch-size", "8", "--strategy", "mirrored",
         "--cpu-devices", "2", "--quiet"],
        cwd=Path(train.__file__).parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["strategy"] == "mirrored" and config["args"]["replicas"] == 2
    assert np.isfinite(pd.read_csv(run / "history.csv")["loss"]).all()
    assert model.read_model_meta(run / "model.keras")["features"] == config["features"]
    # 19 train / 5 val utterances trimmed to multiples of the 2 replicas (uneven splits of a
    # batch across replicas crash Keras 3)
    assert pd.read_csv(run / "split.csv")["part"].value_counts().to_dict() == {"train": 18,
                                                                               "val": 4}


def test_multiworker_strategy_stops_with_the_reason(demo_features, tmp_path):
    with pytest.raises(SystemExit, match="keras-team/keras#20585"):
        train.main(["--data", str(demo_features["train"]), "--run", str(tmp_path / "mw"),
                    "--weights", "none", "--strategy", "multiworker"])
    assert not (tmp_path / "mw").exists()


# ----------------------------------------------------------------------------- recipes


def test_fine_tuned_run_changes_only_the_unfrozen_blocks(demo_features, tmp_path):
    run, history = train.train(demo_features["train"], tmp_path / "ft", weights="none",
                               epochs=1, batch_size=8, verbose=0, fine_tune_blocks=1,
                               fine_tune_epochs=1, fine_tune_lr=1e-3)
    assert list(history["epoch"]) == [0, 1]
    config = json.loads((run / "config.json").read_text())
    assert config["fine_tune"]["blocks"] == ["block7a"]
    assert config["fine_tune"]["phase1_epochs"] == 1
    assert config["args"]["feature_cache"] is True  # the frozen phase used the cache
    final = model.backbone_of(model.load_model(run / "model.keras"))
    # a frozen-only twin (same seed, same initial backbone) holds the backbone as it started
    twin, _ = train.train(demo_features["train"], tmp_path / "frozen", weights="none", epochs=1,
                          batch_size=8, verbose=0)
    frozen = model.backbone_of(model.load_model(twin / "model.keras"))
    changed = set()
    for a, b in zip(final.layers, frozen.layers):
        for wa, wb in zip(a.weights, b.weights):
            if not np.array_equal(wa.numpy(), wb.numpy()):
                changed.add(a.name)
    assert changed and {n.split("_")[0] for n in changed} <= {"block7a", "top"}
    assert not any("bn" in n for n in changed)  # BatchNorm weights and statistics untouched


def test_monitor_selects_best_checkpoint_and_early_stopping(demo_features, tmp_path):
    run, history = train.train(demo_features["train"], tmp_path / "eer", weights="none",
                               epochs=6, batch_size=8, verbose=0, monitor="auc",
                               early_stopping=1, learning_rate=0.0)
    # lr 0: nothing changes after the first epoch, so patience 1 stops after epoch 2
    assert len(history) == 2 and "val_eer" in history.columns
    meta = model.read_model_meta(run / "best.keras")
    assert meta["monitor"] == "val_auc" and meta["epoch"] == 1
    run2, h2 = train.train(demo_features["train"], tmp_path / "eer2", weights="none", epochs=3,
                           batch_size=8, verbose=0, monitor="eer", learning_rate=1e-2)
    meta2 = model.read_model_meta(run2 / "best.keras")
    assert meta2["monitor"] == "val_eer"
    assert meta2["val_eer"] == pytest.approx(h2["val_eer"].min())
    assert meta2["epoch"] == int(h2["val_eer"].idxmin()) + 1


def test_early_stopping_counts_across_a_crash(demo_features, tmp_path):
    """Keras' EarlyStopping restarted its patience at every fit: a run resumed after a crash
    trained longer than the uninterrupted one. lr 0: no epoch after the first improves, so
    patience 2 stops after epoch 3, crash or not."""
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("power cut")

    args = dict(data=demo_features["train"], weights="none", epochs=8, batch_size=8, verbose=0,
                monitor="auc", early_stopping=2, learning_rate=0.0)
    _, whole = train.train(run_dir=tmp_path / "whole", **args)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(run_dir=tmp_path / "cut", callbacks=[Crash()], **args)
    _, resumed = train.train(run_dir=tmp_path / "cut", **args)
    assert len(whole) == 3 and list(resumed["epoch"]) == list(whole["epoch"])


def test_a_model_from_scratch_is_saved_with_batchnorm_statistics_of_its_final_weights(
        demo_features, tmp_path):
    """Issue 23: the quickstart's LCNN gave every validation utterance P(spoof) 0.7-0.8 (val
    accuracy 0.5 from epoch 4 to 20) while training accuracy was 0.99: Keras' moving average
    of the BatchNorm statistics lagged behind the weights. Precise BN sets them, before every
    validation, to the mean over --bn-batches training batches: recomputing them from the saved
    weights gives the saved statistics. With --bn-batches 0 they are the lagging average."""
    import keras

    from deepfake_detector.models.common import batchnorm_statistics, recalibrate_batchnorm

    args = dict(data=demo_features["train"], model="lcnn", epochs=3, batch_size=8, verbose=0,
                seed=1, calibrate="none")
    for bn_batches in (2, 0):
        run, _ = train.train(run_dir=tmp_path / f"bn{bn_batches}", bn_batches=bn_batches, **args)
        assert train.runs.read_config(run)["args"]["bn_batches"] == bn_batches
        m = keras.models.load_model(run / "model.keras", compile=False, safe_mode=True)
        saved = [np.array(v) for v in batchnorm_statistics(m)]
        cfg = train.C.make_config(None, run=str(run), bn_batches=2,
                                  **{k: v for k, v in args.items() if k != "verbose"})
        data = train.prepare_data(cfg, cfg.seed)
        recalibrate_batchnorm(m, train.batchnorm_batches(cfg, data, m))
        again = [np.array(v) for v in batchnorm_statistics(m)]
        same = all(np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(saved, again))
        assert same == (bn_batches == 2)


def test_calibrated_threshold_reproduces_the_eer_point_on_validation(trained_run):
    import evaluate

    saved = json.loads((trained_run / "threshold.json").read_text())
    assert set(saved) == {"best", "final"} and saved["best"]["method"] == "eer"
    m = evaluate.evaluate(trained_run, plots=False, out=trained_run / "eval" / "cal_check")
    cal = m["operating_points"]["calibrated"]
    assert m["threshold"]["value"] == saved["best"]["threshold"]  # the default operating point
    assert m["operating_points"]["chosen"]["threshold"] == cal["threshold"]
    flagged = cal["fp"] / (cal["fp"] + cal["tn"])  # bonafide called spoof
    missed = cal["fn"] / (cal["fn"] + cal["tp"])  # spoof called bonafide
    assert flagged == pytest.approx(saved["best"]["bonafide_flagged"])
    assert missed == pytest.approx(saved["best"]["spoof_missed"])
    assert (flagged + missed) / 2 == pytest.approx(m["eer"])  # held-out part = validation
    assert m["operating_points"]["0.5"]["threshold"] == 0.5


def test_augmentation_never_touches_validation_or_evaluation(demo_features, tmp_path,
                                                             monkeypatch):
    import data_loader
    import evaluate
    from deepfake_detector import datasets, inference
    from deepfake_detector import runs

    seen = []
    real = augment.augment_example

    def spy(x, audio, rng, aug, params):
        seen.append(audio)
        return real(x, audio, rng, aug, params)

    monkeypatch.setattr(datasets, "augment_example", spy)
    run, _ = train.train(demo_features["train"], tmp_path / "aug", weights="none", epochs=2,
                         batch_size=8, verbose=0, freq_mask=16, time_mask=16,
                         random_crop=True, noise_snr="10,40", lowpass="3400,7000")
    split = pd.read_csv(run / "split.csv")
    manifest = data_loader.load_manifest(demo_features["train"]).set_index("utt_id")
    audio = {part: set(manifest.loc[split.loc[split["part"] == part, "utt_id"], "audio"])
             for part in ("train", "val")}
    assert set(seen) <= audio["train"] and not set(seen) & audio["val"]
    assert len(seen) >= 2 * len(audio["train"])  # every training example, every epoch
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["augment"]["random_crop"] and config["args"]["feature_cache"] is False

    def forbidden(*a, **k):
        raise AssertionError("augmentation called outside training")

    monkeypatch.setattr(datasets, "augment_example", forbidden)
    m = evaluate.evaluate(run, demo_features["dev"], plots=False)
    best = model.load_model(run / "best.keras")
    df = data_loader.load_manifest(demo_features["dev"])
    x = np.stack([data_loader.to_model_input(np.load(p)).numpy() for p in df["path"]])
    p = best.predict(x, verbose=0).reshape(-1)
    table = pd.read_csv(Path(m["out_dir"]) / "predictions.csv")
    np.testing.assert_allclose(table["p_spoof"], p, rtol=1e-4, atol=1e-7)
    d = inference.Detector(run)
    assert d.threshold == runs.read_threshold(run)["threshold"]


def test_seeds_report_mean_and_spread(demo_features, tmp_path, capsys):
    run = tmp_path / "seeds"
    train.main(["--data", str(demo_features["train"]), "--run", str(run), "--weights", "none",
                "--epochs", "1", "--batch-size", "8", "--quiet", "--seeds", "1,2",
                "--test-data", str(demo_features["dev"])])
    per_run = pd.read_csv(run / "seeds.csv")
    summary = pd.read_csv(run / "seeds_summary.csv", index_col=0)
    assert list(per_run["seed"]) == [1, 2]
    for k in ("val_eer", "val_f1_0.5", "val_f1_cal", "test_eer", "test_f1"):
        assert summary.loc["mean", k] == pytest.approx(per_run[k].mean())
        assert summary.loc["std", k] == pytest.approx(per_run[k].std(ddof=1))
    splits = [pd.read_csv(run / f"seed{s}" / "split.csv") for s in (1, 2)]
    assert splits[0].equals(splits[1])  # one split (--seed), two initializations
    configs = [json.loads((run / f"seed{s}" / "config.json").read_text()) for s in (1, 2)]
    assert [c["args"]["seed"] for c in configs] == [1, 2]
    assert "mean" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="distinct integers"):
        train.main(["--data", str(demo_features["train"]), "--seeds", "1,1"])


def test_interrupted_fine_tuning_resumes_in_its_phase(demo_features, tmp_path, capsys):
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:  # the first fine-tuning epoch
                raise RuntimeError("power cut")

    run = tmp_path / "ft"
    args = dict(data=demo_features["train"], weights="none", epochs=2, batch_size=8, verbose=0,
                fine_tune_blocks=1, fine_tune_epochs=2)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(run_dir=run, callbacks=[Crash()], **args)
    assert (run / "phase1.json").exists() and (run / "backup_ft").exists()
    assert not (run / "model.keras").exists()
    _, history = train.train(run_dir=run, **args)
    assert "resuming" in capsys.readouterr().err
    assert list(history["epoch"]) == [0, 1, 2, 3]  # the frozen phase was not run again
    assert not (run / "phase1.json").exists() and not (run / "phase1.weights.h5").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["fine_tune"]["blocks"] == ["block7a"]
    assert (run / "threshold.json").exists()


def test_single_class_validation_skips_calibration_with_a_warning(demo_features, tmp_path,
                                                                   capsys):
    import shutil

    val = tmp_path / "spoof_only"
    shutil.copytree(demo_features["dev"], val)
    manifest = pd.read_csv(val / "manifest.csv")
    manifest[manifest["label"] == "spoof"].to_csv(val / "manifest.csv", index=False)
    run, history = train.train(demo_features["train"], tmp_path / "r", val_data=val,
                               weights="none", epochs=1, batch_size=8, verbose=0)
    assert "warning: no threshold calibrated" in capsys.readouterr().err
    saved = json.loads((run / "threshold.json").read_text())  # written: the run is finished
    assert saved["best"] is None and saved["note"].startswith("no threshold calibrated")
    from deepfake_detector import runs

    assert runs.read_threshold(run) is None and runs.is_finished(run)  # so 0.5 is used
    assert history["val_eer"].isna().all()  # EER undefined with one class, logged as NaN


# ----------------------------------------------------------------------------- families, sources


@pytest.mark.parametrize("family", [
    # aasist trains for 2.5 minutes on 2 cores; test_aasist.py's fine-tuning test saves,
    # reloads and evaluates the same family in the default run
    pytest.param(f, marks=pytest.mark.full) if f == "aasist" else f for f in model.FAMILIES])
def test_every_family_round_trips_through_save_load_evaluate_predict(family, request,
                                                                     demo_corpus, tmp_path):
    """Train -> save -> load in Keras safe mode -> evaluate.py and predict.py give the same
    scores as the model itself (whisper: the untrained mini encoder on waveform arrays)."""
    import keras

    import data_loader
    import evaluate
    from deepfake_detector import features
    from deepfake_detector import inference

    options = dict(model=family, epochs=1, batch_size=8, verbose=0)
    if family == "whisper":
        pytest.importorskip("keras_hub", reason="--model whisper needs requirements-whisper.txt")
        data = request.getfixturevalue("demo_waveforms")
        options["preset"] = "random:mini"
    elif family == "aasist":  # the light configuration from scratch, on 64,600-sample windows
        data = request.getfixturevalue("demo_waveforms_aasist")
        options["preset"] = "AASIST-L"
    else:  # EfficientNet: random weights scaled so that scores differ (conftest)
        data = request.getfixturevalue("demo_features")
        options["weights"] = (request.getfixturevalue("informative_weights")
                              if family == "efficientnetb0" else "none")
    run, _ = train.train(data["train"], tmp_path / family, **options)
    meta = model.read_model_meta(run / "best.keras")
    assert meta["model"] == family
    assert meta["input"]["kind"] == model.FAMILIES[family]["input"]
    model.load_model(run / "best.keras")  # registers the custom (and KerasHub) layers
    loaded = keras.models.load_model(run / "best.keras", safe_mode=True, compile=False)
    m = evaluate.evaluate(run, data["dev"], plots=False)
    table = pd.read_csv(Path(m["out_dir"]) / "predictions.csv")
    df = data_loader.load_manifest(data["dev"])
    spec = features.array_spec(meta["features"])
    x = data_loader.to_model_input(np.stack([features.read_array(p, *spec) for p in df["path"]]),
                                   meta["input"]["kind"])
    p = loaded.predict(x, verbose=0).reshape(-1)
    assert p.std() > 1e-4  # the scores differ between utterances: the comparison means something
    np.testing.assert_allclose(table["p_spoof"], p, rtol=1e-4, atol=1e-7)
    files = [demo_corpus / "ASVspoof2019_LA_dev" / "flac" / f"{u}.flac" for u in df["utt_id"]]
    rows = list(inference.score_files(files, inference.Detector(run)))
    np.testing.assert_allclose([r["score"] for r in rows], table["score"], rtol=1e-5, atol=1e-6)


def test_waveform_augmentation_reaches_training_batches_never_validation(demo_features):
    """--rawboost and --channel: the training batches are perturbed (read from the audio
    again), the validation batches are the stored arrays, exactly."""
    from deepfake_detector.training import config as C
    from deepfake_detector.sampling import EpochClock

    cfg = C.make_config(data=[str(demo_features["train"])], model="lcnn", batch_size=4,
                        rawboost=5, channel="codec,dropout", augment_p=1.0)
    assert cfg.augmentation()["rawboost"] == 5
    data = train.prepare_data(cfg, cfg.seed)
    tr, va = train.spectrogram_datasets(cfg, data, EpochClock())
    stored = np.stack([np.load(p) for p in data.val_df["path"]])
    val_x = np.concatenate([x.numpy() for x, _ in va])[..., 0]
    np.testing.assert_array_equal(val_x, stored)
    x, _ = next(iter(tr))
    off = C.make_config(cfg, rawboost=0, channel=None)  # the same batch order, unaugmented
    plain, _ = next(iter(train.spectrogram_datasets(off, data, EpochClock())[0]))
    order = train.epoch_order(data.train_df["target"], 4, 0, cfg.seed)[:4]
    stored = np.stack([np.load(p) for p in data.train_df["path"].iloc[order]])
    np.testing.assert_array_equal(plain.numpy()[..., 0], stored)  # the batch is known
    assert x.shape == (4, 128, 128, 1) and not np.allclose(x.numpy(), plain.numpy(), atol=1e-3)


def test_frozen_aasist_encoder_trains_only_the_back_end_on_cached_features(
        demo_waveforms_aasist, tmp_path):
    """--freeze-encoder: started from a run (--init), the encoder (sinc front end, residual
    blocks and their BatchNorm statistics) is saved exactly as it came, the graph attention
    back end trains on cached encoder features (shape (n, 29, 23, 24) for AASIST-L), and
    scoring from the cache gives the model's scores."""
    from deepfake_detector.evaluation import report

    data = demo_waveforms_aasist
    with pytest.raises(SystemExit, match="--freeze-encoder applies to --model aasist, not to "
                                         "lcnn"):
        train.main(["--data", str(data["train"]), "--run", str(tmp_path / "x"), "--model",
                    "lcnn", "--freeze-encoder"])
    source, _ = train.train(data["train"], tmp_path / "source", model="aasist",
                            preset="AASIST-L", epochs=1, batch_size=8, verbose=0)
    run, _ = train.train(data["train"], tmp_path / "frozen", model="aasist", preset="AASIST-L",
                         init=str(source), freeze_encoder=True, epochs=3, batch_size=8,
                         bn_batches=2, learning_rate=1e-3, cache_dir=str(tmp_path / "cache"),
                         verbose=0)
    cache = list((tmp_path / "cache" / "train").glob("*.npy"))
    assert len(cache) == 1 and np.load(cache[0]).shape == (24, 29, 23, 24)
    before = model.load_model(source / "best.keras")
    after = model.load_model(run / "best.keras")
    graph = [layer.name for layer in after.layers].index("graph")
    for old, new in zip(before.layers[:graph], after.layers[:graph]):
        for a, b in zip(old.get_weights(), new.get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=old.name)
    changed = [not np.array_equal(a, b) for a, b in
               zip(before.get_layer("graph").get_weights(), after.get_layer("graph").get_weights())]
    assert any(changed)
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["freeze_encoder"] and config["args"]["init"] == str(source)
    trainable = sum(int(np.prod(w.shape)) for name in ("graph", "p_spoof")
                    for w in after.get_layer(name).trainable_weights)
    assert config["params"]["trainable"] == trainable
    cached, source_info = report.scores_from_cache(run, data["dev"])
    full, _ = report.scores_from_model(run, data["dev"])
    assert source_info["mode"].startswith("model (cached")
    assert list(cached["utt_id"]) == list(full["utt_id"])
    np.testing.assert_allclose(cached["score"], full["score"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="its encoder trains"):
        report.scores_from_cache(source, data["dev"])


def test_several_training_folders(demo_features, tmp_path):
    run, _ = train.train([demo_features["train"], demo_features["dev"]], tmp_path / "two",
                         model="lcnn", epochs=1, batch_size=8, verbose=0)
    split = pd.read_csv(run / "split.csv")
    assert set(split["source"]) == {str(demo_features["train"]), str(demo_features["dev"])}
    assert len(split) == 24 + 12
    for part in ("train", "val"):  # the 80/20 split is stratified over the union
        assert set(split.loc[split["part"] == part, "source"]) == set(split["source"])
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["data"] == [str(demo_features["train"].resolve()),
                                      str(demo_features["dev"].resolve())]


def test_several_folders_must_share_feature_parameters(demo_features, demo_corpus, tmp_path):
    import preprocess
    from deepfake_detector import protocols

    protocol, audio = protocols.resolve_2019_layout(demo_corpus, "dev")
    preprocess.preprocess(protocol, audio, tmp_path / "resized", fit="resize", workers=1,
                          progress=False)
    with pytest.raises(SystemExit, match="were preprocessed with different feature parameters "
                                         r"\(differ in: .*fit") as e:
        train.main(["--data", str(demo_features["train"]), "--data", str(tmp_path / "resized"),
                    "--run", str(tmp_path / "r"), "--model", "lcnn"])
    assert str(tmp_path / "resized") in str(e.value) and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- hostile input


def test_feature_cache_follows_the_arrays(informative_weights, demo_corpus, tmp_path):
    """Arrays computed again (here with other parameters, on the same folder) are never served
    from the old cache: its key covers features.json and every array's size and time."""
    import preprocess
    from deepfake_detector import protocols

    protocol, audio = protocols.resolve_2019_layout(demo_corpus, "train")
    data = tmp_path / "feat"
    preprocess.preprocess(protocol, audio, data, workers=1, progress=False)
    args = dict(weights=informative_weights, epochs=1, batch_size=8, verbose=0)
    train.train(data, tmp_path / "a", **args)
    (old,) = (data / "backbone_cache").glob("*.npy")
    preprocess.preprocess(protocol, audio, data, workers=1, progress=False, overwrite=True,
                          fit="resize")
    train.train(data, tmp_path / "b", **args)
    (new,) = (data / "backbone_cache").glob("*.npy")
    assert new.name != old.name and not old.exists()
    assert new.name.split("-")[0] == old.name.split("-")[0]  # same backbone, other data


def test_a_corrupt_array_stops_training_fast_naming_it(demo_features, tmp_path):
    import shutil
    import subprocess
    import sys
    import time

    data = tmp_path / "feat"
    shutil.copytree(demo_features["train"], data, ignore=shutil.ignore_patterns("backbone_*"))
    victim = sorted(data.glob("*.npy"))[3]
    victim.write_bytes(victim.read_bytes()[:1000])
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "train.py", "--data", str(data), "--run",
                           str(tmp_path / "r"), "--weights", "none", "--epochs", "1", "--quiet"],
                          cwd=Path(train.__file__).parent, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and time.monotonic() - start < 60
    assert str(victim) in proc.stderr and "run preprocess.py" in proc.stderr


def test_one_class_training_data_is_refused(demo_features, tmp_path):
    import shutil

    data = tmp_path / "spoof_only"
    shutil.copytree(demo_features["train"], data, ignore=shutil.ignore_patterns("backbone_*"))
    manifest = pd.read_csv(data / "manifest.csv")
    manifest[manifest["label"] == "spoof"].to_csv(data / "manifest.csv", index=False)
    with pytest.raises(SystemExit, match=r"hold only spoof utterances \(12\)"):
        train.main(["--data", str(data), "--val-data", str(demo_features["dev"]), "--run",
                    str(tmp_path / "r"), "--weights", "none"])
    assert not (tmp_path / "r").exists()


def test_resuming_with_other_arguments_is_refused(demo_features, tmp_path):
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("power cut")

    run = tmp_path / "r"
    args = dict(data=demo_features["train"], model="lcnn", batch_size=8, verbose=0)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(run_dir=run, epochs=3, callbacks=[Crash()], **args)
    orphan = run / ".model.keras.tmp-x1y2.keras"
    orphan.write_bytes(b"half a model")
    with pytest.raises(ValueError, match=r"started with other arguments \(epochs: 3 -> 4\)"):
        train.train(run_dir=run, epochs=4, **args)
    _, history = train.train(run_dir=run, epochs=3, **args)  # the same command resumes
    assert list(history["epoch"]) == [0, 1, 2] and not orphan.exists()
    _, history = train.train(run_dir=run, epochs=2, overwrite=True, **args)  # or start again
    assert list(history["epoch"]) == [0, 1]


def test_a_full_disk_at_the_end_leaves_an_unfinished_run_and_a_clear_error(demo_features,
                                                                          tmp_path, monkeypatch):
    """ENOSPC while writing threshold.json used to be a traceback, and the run, holding
    best.keras, was then taken as finished (predict.py silently used 0.5)."""
    import errno

    from deepfake_detector.evaluation import report
    from deepfake_detector import runs

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "calibrate_run", full)
    run = tmp_path / "runs" / "full"
    with pytest.raises(SystemExit, match=r"cannot write the run .*No space left.*not finished"):
        train.main(["--data", str(demo_features["train"]), "--run", str(run), "--model", "lcnn",
                    "--epochs", "1", "--quiet"])
    assert (run / "model.keras").exists() and not runs.is_finished(run)
    with pytest.raises(FileNotFoundError, match="no finished run"):
        runs.find_latest_run(tmp_path / "runs")
    monkeypatch.undo()
    train.main(["--data", str(demo_features["train"]), "--run", str(run), "--model", "lcnn",
                "--epochs", "1", "--quiet"])  # the same command finishes it
    assert runs.is_finished(run) and runs.find_latest_run(tmp_path / "runs") == run


def test_calibrate_none_still_marks_the_run_finished(demo_features, tmp_path):
    from deepfake_detector import runs

    run, _ = train.train(demo_features["train"], tmp_path / "none", model="lcnn", epochs=1,
                         verbose=0, calibrate="none")
    saved = json.loads((run / "threshold.json").read_text())
    assert saved["best"] is None and "none" in saved["note"] and runs.is_finished(run)
    assert runs.read_threshold(run) is None  # so the decision threshold is the default 0.5


@pytest.mark.parametrize("crash_after, recipe", [
    (1, dict(model="lcnn", epochs=4, freq_mask=8, time_mask=8)),  # per-example draws count
    # cached backbone features, 32 steps per call, balanced batches; crash in fine-tuning
    (2, dict(weights="informative", epochs=2, balanced_batches=True, fine_tune_blocks=1,
             fine_tune_epochs=2))], ids=["lcnn-augmented", "cached-balanced-finetuned"])
def test_a_resumed_run_reproduces_the_uninterrupted_one(demo_features, informative_weights,
                                                         tmp_path, crash_after, recipe):
    """Issue 21, item 11: a run resumed after a crash replayed epoch 0's data order (and
    augmentation draws) from the resumed epoch on: its history and weights differed from an
    uninterrupted run's (accuracy 0.852 vs 0.519 in the issue)."""
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == crash_after:
                raise RuntimeError("power cut")

    args = dict(data=demo_features["train"], batch_size=8, verbose=0, seed=3, **recipe)
    if args.get("weights") == "informative":  # random init trains flat at ln 2: nothing to see
        args["weights"] = informative_weights
    whole, h_whole = train.train(run_dir=tmp_path / "whole", **args)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(run_dir=tmp_path / "cut", callbacks=[Crash()], **args)
    cut, h_cut = train.train(run_dir=tmp_path / "cut", **args)
    cols = ["epoch", "loss", "accuracy", "val_loss", "val_auc", "val_eer"]
    pd.testing.assert_frame_equal(h_cut[cols], h_whole[cols], check_exact=False, rtol=1e-5)
    a = keras.models.load_model(whole / "model.keras", compile=False, safe_mode=True)
    b = keras.models.load_model(cut / "model.keras", compile=False, safe_mode=True)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_a_resumed_run_restores_the_optimizer_and_the_random_state(demo_features, tmp_path):
    """Keras' BackupAndRestore used to skip the optimizer's saved state (unbuilt optimizer):
    a resumed run restarted Adam's moments and the cosine schedule at step 0; and it never
    saved the Dropout layers' random state."""
    import keras

    seen = {}

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                seen["states"] = [np.asarray(v).tolist() for v in self.model.variables
                                  if v.path.endswith("seed_generator_state")]
                raise RuntimeError("power cut")

    class Spy(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.setdefault("iterations", int(self.model.optimizer.iterations.numpy()))
            seen.setdefault("resumed", [np.asarray(v).tolist() for v in self.model.variables
                                        if v.path.endswith("seed_generator_state")])

    args = dict(data=demo_features["train"], model="lcnn", epochs=3, batch_size=8, verbose=0)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(run_dir=tmp_path / "r", callbacks=[Crash()], **args)
    train.train(run_dir=tmp_path / "r", callbacks=[Spy()], **args)
    steps = -(-int(0.8 * 24) // 8)
    assert seen["iterations"] == 2 * steps  # Adam's step count of the end of epoch 1
    assert seen["states"] and seen["resumed"] == seen["states"]
