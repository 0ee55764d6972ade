"""models/ (efficientnet.py, common.py): the design-card architecture, frozen backbone, weights, fine-tuning, feature cache."""

import numpy as np
import pytest

from deepfake_detector import models as model_mod
from deepfake_detector.models import efficientnet

# EfficientNetB0 without top: 4,049,571 weights (all frozen, incl. BatchNorm statistics);
# head: Dense(1280 -> 128) + Dense(128 -> 1).
BACKBONE_PARAMS = 4_049_571
HEAD_PARAMS = 1280 * 128 + 128 + 128 * 1 + 1


@pytest.fixture(scope="module")
def model():
    return efficientnet.build_model(weights="none")


def test_design_card_layers(model):
    import keras

    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "InferenceMode", "GlobalAveragePooling2D", "Dense", "Dropout",
                     "Dense"]
    backbone, dense, drop, out = model.layers[1], model.layers[3], model.layers[4], model.layers[5]
    assert backbone.layer.name == "efficientnetb0"
    assert model_mod.backbone_of(model) is backbone.layer
    assert dense.units == 128 and dense.activation is keras.activations.relu
    assert drop.rate == 0.5
    assert out.units == 1 and out.activation is keras.activations.sigmoid
    assert model.input_shape == (None, 128, 128, 3) and model.output_shape == (None, 1)


def test_backbone_frozen_and_parameter_counts(model):
    assert model_mod.backbone_of(model).trainable is False
    assert all(not layer.trainable for layer in model_mod.backbone_of(model).layers)
    count = lambda ws: int(sum(np.prod(w.shape) for w in ws))  # noqa: E731
    assert count(model.trainable_weights) == HEAD_PARAMS == 164_097
    assert count(model.non_trainable_weights) == BACKBONE_PARAMS


def test_optimizer_and_loss(model):
    import keras

    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)


@pytest.mark.slow
def test_frozen_backbone_does_not_change_during_training(model, tmp_path):
    import keras

    before = [w.numpy().copy() for w in model_mod.backbone_of(model).weights]
    x = np.random.default_rng(0).random((8, 128, 128, 3)).astype(np.float32) * 255
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    m.fit(x, np.array([0, 1] * 4, np.float32), epochs=2, verbose=0)
    for w, b in zip(model_mod.backbone_of(m).weights, before):  # BatchNorm statistics included
        np.testing.assert_array_equal(w.numpy(), b)
    assert not np.array_equal(m.layers[3].kernel.numpy(), model.layers[3].kernel.numpy())


def test_backbone_is_deterministic_in_training_mode(model):
    """Keras 3 passes fit's training=True to nested layers; the InferenceMode wrapper keeps
    EfficientNet's stochastic-depth Dropout and BatchNorm in inference mode anyway."""
    import keras

    x = np.random.default_rng(1).random((4, 128, 128, 3)).astype(np.float32) * 255
    extractor = model_mod.feature_extractor(model)
    np.testing.assert_array_equal(extractor(x, training=True).numpy(),
                                  extractor(x, training=False).numpy())
    raw = keras.Model(model.input, model_mod.backbone_of(model)(model.input, training=True))
    assert not np.array_equal(raw(x, training=True).numpy(), raw(x, training=False).numpy())


def test_imagenet_download_failure_names_the_fixes(monkeypatch):
    import keras

    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "EfficientNetB0", offline)
    with pytest.raises(model_mod.WeightsUnavailable) as e:
        efficientnet.make_backbone("imagenet")
    msg = str(e.value)
    assert "--weights none" in msg and "--weights /path/to/efficientnetb0_notop.h5" in msg
    assert "name resolution" in msg


def test_local_weights_file(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    src = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                            input_shape=(128, 128, 3))
    path = tmp_path / "b0_notop.weights.h5"
    src.save_weights(path)
    loaded = efficientnet.make_backbone(str(path))
    for a, b in zip(src.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(model_mod.WeightsUnavailable, match="nope.h5 not found"):
        efficientnet.make_backbone(str(tmp_path / "nope.h5"))


def test_head_on_cached_features_predicts_like_the_full_model(informative_weights, demo_features):
    import data_loader

    model = efficientnet.build_model(informative_weights)
    df = data_loader.load_manifest(demo_features["dev"])
    x = np.concatenate([b.numpy() for b in data_loader.make_dataset(df, 5, with_labels=False)])
    features = model_mod.feature_extractor(model).predict(x, batch_size=7, verbose=0)
    assert features.shape == (len(df), 1280) and features.std(axis=0).mean() > 0.01
    p_full = model.predict(x, batch_size=4, verbose=0)
    p_head = model_mod.head_model(model).predict(features, batch_size=3, verbose=0)
    np.testing.assert_allclose(p_head, p_full, atol=1e-5)


def test_fine_tuning_unfreezes_exactly_n_blocks_and_no_batchnorm():
    import keras

    model = efficientnet.build_model(weights="none")
    blocks = model_mod.backbone_blocks(model_mod.backbone_of(model), efficientnet.block_of)
    assert len(blocks) == 16 and blocks[0] == "block1a" and blocks[-3:] == ["block6c", "block6d",
                                                                            "block7a"]
    assert model_mod.unfreeze_top_blocks(model, 3) == ["block6c", "block6d", "block7a"]
    backbone = model_mod.backbone_of(model)
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert {n.split("_")[0] for n in trainable} == {"block6c", "block6d", "block7a", "top"}
    assert "top_conv" in trainable and "block6b_project_conv" not in trainable
    bns = [layer for layer in backbone.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 49 and not any(layer.trainable for layer in bns)
    names = {w.path.split("/")[-2] if "/" in w.path else w.path for w in model.trainable_weights}
    assert not any(n.endswith("_bn") or "bn" in n.split("_")[-1] for n in names)
    # trainable weights = the convs and squeeze-excite of the 3 blocks, top_conv, the head
    in_blocks = sum(int(np.prod(w.shape)) for layer in backbone.layers if layer.name in trainable
                    for w in layer.trainable_weights)
    count = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    assert count == in_blocks + HEAD_PARAMS and in_blocks > 0
    for bad in (0, 17):
        with pytest.raises(ValueError, match="between 1 and 16"):
            model_mod.unfreeze_top_blocks(model, bad)


def test_logits_match_the_sigmoid_output(trained_run, demo_features):
    import data_loader

    from deepfake_detector import runs
    from deepfake_detector.evaluation.metrics import sigmoid

    m, meta, _ = runs.load_run(trained_run)
    df = data_loader.load_manifest(demo_features["dev"])
    ds = data_loader.make_dataset(df, 4, with_labels=False)
    logits = model_mod.predict_logits(m, ds)
    p = m.predict(ds, verbose=0).reshape(-1)
    assert logits.shape == (len(df),)
    np.testing.assert_allclose(sigmoid(logits), p, atol=1e-6)


# ----------------------------------------------------------------------------- families


def test_lcnn_layers_and_parameter_count():
    from deepfake_detector import features

    m = model_mod.build("lcnn", features.feature_params())
    assert m.input_shape == (None, 128, 128, 1) and m.output_shape == (None, 1)
    assert model_mod.param_counts(m) == {"trainable": 199_377, "non_trainable": 672}
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds.count("Conv2D") == 9 and kinds.count("MaxFeatureMap") == 10
    assert kinds.count("MaxPooling2D") == 4 and m.layers[-1].name == "p_spoof"
    assert m.get_layer("conv1").filters == 64 and m.get_layer("mfm1").output.shape[-1] == 32
    assert m.get_layer("time_average").output.shape[1:] == (8, 1, 32)  # time averaged, not freq
    with pytest.raises(ValueError,
                       match="--weights applies to efficientnetb0, not to --model lcnn"):
        model_mod.build("lcnn", features.feature_params(), weights="imagenet")
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        model_mod.build("resnet", features.feature_params())


def separable_toy(n=32, seed=0):
    """Mel arrays where spoofs carry a bright band at the top: any working family learns it."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 128, 128), dtype=np.float32) * 0.5
    y = np.arange(n) % 2
    x[y == 1, 100:110, :] += 0.5
    return x, y.astype(np.float32)


@pytest.mark.parametrize("family", [f for f, d in model_mod.FAMILIES.items()
                                    if d["features"] == "mel"])  # whisper: test_whisper.py
def test_every_mel_family_learns_a_separable_toy_set(family, informative_weights):
    import data_loader
    from deepfake_detector import features
    import keras

    keras.utils.set_random_seed(0)
    weights = informative_weights if family == "efficientnetb0" else None
    m = model_mod.build(family, features.feature_params(), weights=weights, learning_rate=1e-3)
    x, y = separable_toy()
    inputs = data_loader.to_model_input(x, model_mod.FAMILIES[family]["input"])
    h = m.fit(inputs, y, batch_size=8, epochs=6, verbose=0).history["loss"]
    assert h[-1] < 0.7 * h[0], h  # the loss falls


@pytest.mark.parametrize("family", ["lcnn", "efficientnetb0"])
def test_a_model_saved_before_the_package_move_loads_and_scores_the_same(tmp_path, family):
    """Until the library moved into deepfake_detector/, .keras files recorded the custom layers'
    module as ``model`` (the old model.py); they are found by their registered names
    (``deepfake_detector>MaxFeatureMap``, ``deepfake_detector>InferenceMode``), not modules."""
    import json
    import zipfile

    features = {"shape": [128, 128], "kind": "mel"}
    m = model_mod.build(family, features, weights="none" if family == "efficientnetb0" else None)
    new, old = tmp_path / "new.keras", tmp_path / "old.keras"
    model_mod.save_model_atomic(m, new, {"model": family})
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                moved = text.count('"module": "deepfake_detector.models.')
                assert moved >= 1  # the custom layer(s) recorded under the package
                data = text.replace('"module": "deepfake_detector.models.common"',
                                    '"module": "model"').replace(
                    '"module": "deepfake_detector.models.lcnn"', '"module": "model"').encode()
                assert '"module": "model"' in data.decode()
            dst.writestr(item, data)
    loaded = model_mod.load_model(old)
    x = np.random.default_rng(0).uniform(0, 255 if family == "efficientnetb0" else 1,
                                         (3, *model_mod.input_shape(features, family)))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))
    assert json.loads(zipfile.ZipFile(old).read("deepfake_meta.json")) == {"model": family}


def bn_toy_model():
    import keras

    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="d")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(x))


def test_precise_batchnorm_is_the_plain_mean_of_the_batch_statistics():
    """Issue 23: Keras' moving average (momentum 0.99) lagged behind a model trained from
    scratch, and the LCNN's inference outputs were all 0.7-0.8. recalibrate_batchnorm sets the
    statistics to the mean over the given batches, and touches nothing else."""
    from deepfake_detector.models.common import batchnorm_statistics, recalibrate_batchnorm

    model = bn_toy_model()
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1 + i, (16, 4)).astype("float32") for i in range(3)]
    weights = [np.array(w) for w in model.trainable_weights]
    seeds = [np.array(v) for v in model.variables if v.path.endswith("seed_generator_state")]
    assert recalibrate_batchnorm(model, batches) == 3
    h = [np.asarray(model.get_layer("d")(b)) for b in batches]
    mean, var = (np.array(v) for v in batchnorm_statistics(model))
    np.testing.assert_allclose(mean, np.mean([x.mean(0) for x in h], 0), rtol=1e-5)
    np.testing.assert_allclose(var, np.mean([x.var(0) for x in h], 0), rtol=1e-4)
    assert model.get_layer("bn").momentum == 0.99 and model.get_layer("drop").rate == 0.5  # back
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(weights, model.trainable_weights))
    assert all(np.array_equal(a, np.array(v)) for a, v in zip(
        seeds, [v for v in model.variables if v.path.endswith("seed_generator_state")]))


def test_best_checkpoint_keeps_the_batchnorm_statistics_of_its_epoch(tmp_path):
    """best.keras paired the best epoch's trainable weights with the last epoch's BatchNorm
    statistics (they are not trainable weights)."""
    import keras

    from deepfake_detector.training.callbacks import make_checkpoint_callback

    model = bn_toy_model()
    cb = make_checkpoint_callback(tmp_path / "best.keras", {"run": "t"}, model)
    cb.set_model(model)
    bn = model.get_layer("bn")
    for epoch, (loss, stat) in enumerate([(0.5, 1.0), (0.2, 2.0), (0.9, 3.0)]):
        bn.moving_mean.assign(np.full(3, stat, "float32"))
        model.get_layer("d").bias.assign(np.full(3, stat, "float32"))
        cb.on_epoch_end(epoch, {"val_loss": loss})
    cb.on_train_end()
    best = keras.models.load_model(tmp_path / "best.keras", compile=False)
    np.testing.assert_array_equal(best.get_layer("bn").moving_mean, np.full(3, 2.0))
    np.testing.assert_array_equal(best.get_layer("d").bias, np.full(3, 2.0))
    np.testing.assert_array_equal(bn.moving_mean, np.full(3, 3.0))  # the model itself: last


def test_cacheable_encoders_are_recognized():
    """`encoder_frozen`: what train.py's feature cache depends on. A frozen backbone or a frozen
    AASIST encoder is cacheable (fixed mel filters do not count as training); a trainable one
    never is."""
    from deepfake_detector import features

    model = model_mod
    mel = features.feature_params()
    wave = features.feature_params(kind="waveform", clip_samples=64_600)
    assert model.encoder_frozen(model.build("efficientnetb0", mel, weights="none"))
    assert model.encoder_frozen(model.build("aasist", wave, preset="AASIST-L",
                                            freeze_encoder=True))
    assert not model.encoder_frozen(model.build("aasist", wave, preset="AASIST-L"))
    with pytest.raises(ValueError, match="--freeze-encoder applies to --model aasist"):
        model.build("lcnn", mel, freeze_encoder=True)
    pytest.importorskip("keras_hub", reason="--model whisper needs requirements-whisper.txt")
    whisper = model.build("whisper", features.feature_params(kind="waveform"),
                          preset="random:mini")
    assert model.encoder_frozen(whisper)
    model.unfreeze_top_blocks(whisper, 1)
    assert not model.encoder_frozen(whisper)


def test_a_damaged_feature_cache_is_computed_again_never_used(informative_weights,
                                                               demo_features, tmp_path, capsys):
    """Issue 32, item 10: a cache zeroed in part, truncated, or left half-written by a killed
    writer is verified against the record written with it (size, shape, sha256): it is
    computed again with a warning naming the file, never trained or scored on."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    import data_loader
    from conftest import REPO
    from deepfake_detector.training import feature_cache

    model = efficientnet.build_model(informative_weights)
    data = demo_features["dev"]
    df = data_loader.load_manifest(data)
    params = data_loader.load_features_json(data)
    cache = tmp_path / "cache"
    _, first = feature_cache.cached_features(model, data, df, params, cache, progress=False)
    first = np.array(first)
    (npy,) = cache.glob("*.npy")
    size = npy.stat().st_size
    for damage in ("zeroed", "truncated"):
        with open(npy, "r+b") as f:
            if damage == "zeroed":
                f.seek(size // 2)
                f.write(bytes(4096))
            else:
                f.truncate(size - 1000)
        _, again = feature_cache.cached_features(model, data, df, params, cache, progress=False)
        err = capsys.readouterr().err
        assert f"warning: {npy}:" in err and "computing the features again" in err
        assert ("sha256" in err) if damage == "zeroed" else ("truncated" in err)
        np.testing.assert_allclose(np.array(again), first, atol=1e-6)
    # a writer killed half-way leaves a temporary file: the next use removes it
    npy.unlink()
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import numpy as np
        from deepfake_detector import feature_cache, datasets
        from deepfake_detector.models import efficientnet
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        feature_cache._write_features = killed
        model = efficientnet.build_model({str(informative_weights)!r})
        df = datasets.load_manifest({str(data)!r})
        feature_cache.cached_features(model, {str(data)!r}, df,
                                      datasets.load_features_json({str(data)!r}),
                                      {str(cache)!r}, progress=False)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    assert list(cache.glob(".*.tmp-*")), "the killed writer should have left its temporary file"
    _, again = feature_cache.cached_features(model, data, df, params, cache, progress=False)
    np.testing.assert_allclose(np.array(again), first, atol=1e-6)
    assert not list(cache.glob(".*.tmp-*"))
    assert sorted(p.suffix for p in cache.glob("*-*")) == [".ids", ".json", ".npy"]
