"""train.py: the design-card model, weights handling, run folder, seeds, resume."""

import json

import numpy as np
import pandas as pd
import pytest

import train

# EfficientNetB0 without top: 4,049,571 weights (all frozen, incl. BatchNorm statistics);
# head: Dense(1280 -> 128) + Dense(128 -> 1).
BACKBONE_PARAMS = 4_049_571
HEAD_PARAMS = 1280 * 128 + 128 + 128 * 1 + 1


@pytest.fixture(scope="module")
def model():
    return train.build_model(weights="none")


def test_design_card_layers(model):
    import keras

    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Functional", "GlobalAveragePooling2D", "Dense", "Dropout",
                     "Dense"]
    backbone, dense, drop, out = model.layers[1], model.layers[3], model.layers[4], model.layers[5]
    assert backbone.name == "efficientnetb0"
    assert dense.units == 128 and dense.activation is keras.activations.relu
    assert drop.rate == 0.5
    assert out.units == 1 and out.activation is keras.activations.sigmoid
    assert model.input_shape == (None, 128, 128, 3) and model.output_shape == (None, 1)


def test_backbone_frozen_and_parameter_counts(model):
    assert model.layers[1].trainable is False
    assert all(not layer.trainable for layer in model.layers[1].layers)
    count = lambda ws: int(sum(np.prod(w.shape) for w in ws))  # noqa: E731
    assert count(model.trainable_weights) == HEAD_PARAMS == 164_097
    assert count(model.non_trainable_weights) == BACKBONE_PARAMS


def test_optimizer_and_loss(model):
    import keras

    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)


def test_frozen_backbone_does_not_change_during_training(model, tmp_path):
    import keras

    before = [w.numpy().copy() for w in model.layers[1].weights]
    x = np.random.default_rng(0).random((8, 128, 128, 3)).astype(np.float32) * 255
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    m.fit(x, np.array([0, 1] * 4, np.float32), epochs=2, verbose=0)
    for w, b in zip(m.layers[1].weights, before):  # BatchNorm moving statistics included
        np.testing.assert_array_equal(w.numpy(), b)
    assert not np.array_equal(m.layers[3].kernel.numpy(), model.layers[3].kernel.numpy())


def test_imagenet_download_failure_names_the_fixes(monkeypatch):
    import keras

    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "EfficientNetB0", offline)
    with pytest.raises(train.WeightsUnavailable) as e:
        train.make_backbone("imagenet")
    msg = str(e.value)
    assert "--weights none" in msg and "--weights /path/to/efficientnetb0_notop.h5" in msg
    assert "name resolution" in msg


def test_failed_start_leaves_no_run_folder(monkeypatch, demo_features, tmp_path):
    import keras

    def offline(**kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.applications, "EfficientNetB0", offline)
    with pytest.raises(SystemExit, match="could not download the ImageNet weights"):
        train.main(["--data", str(demo_features["train"]), "--run", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_local_weights_file(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    src = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                            input_shape=(128, 128, 3))
    path = tmp_path / "b0_notop.weights.h5"
    src.save_weights(path)
    loaded = train.make_backbone(str(path))
    for a, b in zip(src.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(train.WeightsUnavailable, match="nope.h5 not found"):
        train.make_backbone(str(tmp_path / "nope.h5"))


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
        meta = train.read_model_meta(trained_run / name)
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
