"""The models: every architecture family, compilation, fine-tuning, and saving with embedded
metadata. Every family ends in a ``p_spoof`` layer, Dense(1, sigmoid) = P(spoof); label 1 = spoof.

- ``efficientnetb0``, the design card (the default): EfficientNetB0 (ImageNet, include_top=False,
  frozen) -> GlobalAveragePooling2D -> Dense(128, relu) -> Dropout(0.5) -> Dense(1, sigmoid).
  Adam(1e-4), binary cross-entropy. Needs ImageNet weights to be useful.
- ``lcnn``: a light CNN with Max-Feature-Map activations trained from random initialization, the
  ASVspoof 2019 countermeasure of Lavrentyeva et al. ("STC antispoofing systems for the ASVspoof
  2019 challenge", Interspeech 2019), on the same 128x128 log-mel arrays. Works offline.
- ``whisper``: a frozen Whisper encoder (Radford et al., "Robust speech recognition via
  large-scale weak supervision", 2022; KerasHub presets) on the raw 16 kHz waveform window,
  mean-pooled over time, then the design-card head. Whisper features generalize better than
  LFCC/MFCC front ends to deepfakes in the wild (Kawa et al., "Improved DeepFake Detection
  Using Whisper Features", Interspeech 2023). Reads waveform arrays (preprocess.py
  ``--features waveform``); needs ``requirements-whisper.txt``.

Each family has its own defaults (`FAMILIES`), used for every training option the user does not
set.

Every saved ``.keras`` archive carries the feature parameters, label convention and input
transform inside it (``deepfake_meta.json``), so evaluation and prediction use exactly what
training used. Models load in Keras safe mode (no arbitrary code).
"""

import json
import zipfile
from pathlib import Path

import numpy as np

from atomic import atomic_output
from features import CLIP_SAMPLES, SAMPLE_RATE, check_kind

# -----------------------------------------------------------------------------
WEIGHTS = "imagenet"
DENSE_UNITS = 128
DROPOUT = 0.5
LEARNING_RATE = 1e-4
CHANNELS = 3  # the mel array repeated to EfficientNet's three input channels
PREDICT_BATCH_SIZE = 32  # prediction batch: fastest on a 2-core CPU (149 files/s vs 98 at 256)
META_NAME = "deepfake_meta.json"  # metadata file stored inside each .keras archive
IMAGENET_FILE = "efficientnetb0_notop.h5"
# Whisper (--model whisper): the multilingual tiny encoder by default (the detector meets
# other languages than ASVspoof's English); "random:<size>" = untrained, for tests and timing
WHISPER_PRESET = "whisper_tiny_multi"
WHISPER_RANDOM = {"tiny": {"num_layers": 4, "num_heads": 6, "hidden_dim": 384,
                           "intermediate_dim": 1536},  # whisper_tiny's architecture
                  "mini": {"num_layers": 2, "num_heads": 2, "hidden_dim": 64,
                           "intermediate_dim": 128}}
WHISPER_MELS = 80  # mel bands of the tiny to medium presets (large-v3 has 128)
# Each family: the arrays it reads (features.KINDS), how it takes them
# (data_loader.to_model_input), whether its backbone is frozen (so train.py may cache its
# features and fine-tune it), and its training defaults (None = does not apply), chosen by
# measurement (docs/recipes.md); whisper's head keeps the design card's.
FAMILIES = {
    "efficientnetb0": {"features": "mel", "input": "rgb255", "channels": 3,
                       "frozen_backbone": True,
                       "defaults": {"weights": WEIGHTS, "preset": None, "epochs": 10,
                                    "batch_size": 16, "learning_rate": LEARNING_RATE,
                                    "lr_schedule": "constant", "weight_decay": 0.0,
                                    "dense_units": DENSE_UNITS, "dropout": DROPOUT}},
    "lcnn": {"features": "mel", "input": "mel", "channels": 1, "frozen_backbone": False,
             "defaults": {"weights": "none", "preset": None, "epochs": 20, "batch_size": 32,
                          "learning_rate": 3e-4, "lr_schedule": "cosine", "weight_decay": 1e-4,
                          "dense_units": 160, "dropout": 0.5}},
    "whisper": {"features": "waveform", "input": "waveform", "channels": None,
                "frozen_backbone": True,
                "defaults": {"weights": None, "preset": WHISPER_PRESET, "epochs": 10,
                             "batch_size": 16, "learning_rate": LEARNING_RATE,
                             "lr_schedule": "constant", "weight_decay": 0.0,
                             "dense_units": DENSE_UNITS, "dropout": DROPOUT}},
}
MODEL = "efficientnetb0"  # the design card
LR_SCHEDULES = ("constant", "cosine")
# -----------------------------------------------------------------------------


def load_tensorflow():
    """Import TensorFlow and Keras quietly, once: the one place the project imports them.

    On a CPU-only machine TensorFlow's C++ runtime prints about seven lines to stderr while it
    loads and probes for GPUs (absl's "log messages before absl::InitializeLog()", oneDNN and
    "Could not find cuda drivers" notes, and ``E0000 ... failed call to cuInit``, which reads
    like a failure and is not one). They are written before its log level applies, so stderr
    (file descriptor 2) is muted while TensorFlow loads and finds its devices, and restored at
    once: every later warning and error still shows. Python-side TensorFlow and absl logs are
    kept at ERROR (their warnings are about graph retracing, not about results).

    Returns
    -------
    tf, keras : module
    """
    import os
    import sys

    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                import tensorflow as tf

                tf.config.list_physical_devices()  # the GPU probe, while muted
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel("ERROR")
    import keras
    import tensorflow as tf

    return tf, keras


class WeightsUnavailable(RuntimeError):
    """The requested backbone weights (or the library that loads them) cannot be loaded."""


def check_family_data(family, features, data_dir="the data"):
    """Refuse arrays of the wrong kind for ``family`` (mel arrays for a waveform model, or the
    reverse), naming the preprocess.py command that makes the right ones.

    Raises
    ------
    features.FeatureMismatch
    """
    check_kind(FAMILIES[family]["features"], features, f"--model {family}", data_dir, "it")


def input_shape(features, family=MODEL):
    """The model input shape for arrays of ``features["shape"]``: (n_mels, n_frames, channels),
    3 channels for EfficientNetB0, 1 for LCNN; (clip_samples,) for Whisper's waveforms."""
    channels = FAMILIES[family]["channels"]
    return (*features["shape"], channels) if channels else tuple(features["shape"])


TRANSFORMS = {"rgb255": ([0, 255], "x * 255, repeated to 3 channels"),
              "mel": ([0, 1], "x, one channel"),
              "waveform": ([-1, 1], "int16 samples / 32768")}


def input_spec(family, features):
    """How a model of ``family`` takes the arrays: ``kind`` (`data_loader.to_model_input`),
    shape and value range; recorded in config.json and inside every saved model."""
    kind = FAMILIES[family]["input"]
    value_range, what = TRANSFORMS[kind]
    return {"kind": kind, "shape": list(input_shape(features, family)), "range": value_range,
            "transform": f"data_loader.to_model_input(x, {kind!r}): {what}"}


def make_backbone(weights=WEIGHTS, input_shape=(128, 128, CHANNELS)):
    """EfficientNetB0 without its classifier.

    Parameters
    ----------
    weights : str or None
        ``"imagenet"`` (downloaded by Keras on first use, then cached in ``~/.keras/models``),
        ``"none"``/None for random initialization, or the path of a local weights file
        (e.g. ``efficientnetb0_notop.h5``).
    input_shape : tuple, default (128, 128, 3)

    Raises
    ------
    WeightsUnavailable
        When the ImageNet weights cannot be fetched or a weights file cannot be loaded; the
        message names the fixes.
    """
    _, keras = load_tensorflow()

    if weights is None or str(weights).lower() == "none":
        w = None
    elif weights == "imagenet":
        w = "imagenet"
    else:
        w = str(weights)
        if not Path(w).is_file():
            raise WeightsUnavailable(f"weights file {w} not found (expected 'imagenet', 'none' "
                                     "or the path of an EfficientNetB0 no-top weights file)")
    try:
        return keras.applications.EfficientNetB0(include_top=False, weights=w,
                                                 input_shape=input_shape)
    except Exception as e:  # network errors surface as several exception types
        if w == "imagenet":
            raise WeightsUnavailable(
                "could not download the ImageNet weights of EfficientNetB0 "
                f"({type(e).__name__}: {e}).\nFixes: (1) on a machine with a network, download "
                f"{IMAGENET_FILE} from the Keras applications release (it is cached in "
                f"~/.keras/models/) and pass --weights /path/to/{IMAGENET_FILE}; or "
                "(2) train from random initialization with --weights none "
                "(much weaker with a frozen backbone).") from None
        raise WeightsUnavailable(f"cannot load weights from {w}: {type(e).__name__}: {e}") \
            from None


_CUSTOM = {}


def custom_layers():
    """The project's Keras layers, defined and registered with Keras on first use (so that
    importing this module does not import Keras): ``InferenceMode``, ``MaxFeatureMap`` and
    ``WhisperLogMel``. Call it before loading a saved model."""
    if _CUSTOM:
        return _CUSTOM
    _, keras = load_tensorflow()

    @keras.saving.register_keras_serializable(package="deepfake_detector")
    class InferenceMode(keras.layers.Wrapper):
        """Runs the wrapped layer in inference mode always (Dropout and BatchNorm included).

        Keras 3 functional models pass the outer call's ``training`` flag to every nested
        layer, overriding a ``training=False`` written when the graph was built; without this
        wrapper EfficientNet's stochastic-depth Dropout layers would stay active in a "frozen"
        backbone during ``fit``.
        """

        def call(self, inputs, training=None):
            return self.layer(inputs, training=False)

        def compute_output_shape(self, input_shape):
            return self.layer.compute_output_shape(input_shape)

    @keras.saving.register_keras_serializable(package="deepfake_detector")
    class MaxFeatureMap(keras.layers.Layer):
        """Max-Feature-Map activation (Wu et al., "A light CNN for deep face representation
        with noisy labels", 2018): the channels split in two halves, element-wise maximum;
        (..., 2c) -> (..., c)."""

        def call(self, inputs):
            a, b = keras.ops.split(inputs, 2, axis=-1)
            return keras.ops.maximum(a, b)

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], input_shape[-1] // 2)

    WhisperLogMel = _whisper_log_mel_layer(keras)

    _CUSTOM.update(InferenceMode=InferenceMode, MaxFeatureMap=MaxFeatureMap,
                   WhisperLogMel=WhisperLogMel)
    return _CUSTOM


def _whisper_log_mel_layer(keras):
    """Define and register the ``WhisperLogMel`` layer (see `custom_layers`)."""

    @keras.saving.register_keras_serializable(package="deepfake_detector")
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


def build_model(weights=WEIGHTS, input_shape=(128, 128, CHANNELS), dense_units=DENSE_UNITS,
                dropout=DROPOUT, learning_rate=LEARNING_RATE, weight_decay=0.0,
                decay_steps=None):
    """The design-card model, compiled.

    Parameters
    ----------
    weights : str or None
        See `make_backbone`.
    input_shape : tuple
        (128, 128, 3) images with values in [0, 255] (see `data_loader.to_model_input`).
    dense_units, dropout, learning_rate, weight_decay, decay_steps :
        See `compile_model`.

    Returns
    -------
    model : keras.Model
        Input (batch, 128, 128, 3) -> output (batch, 1) = P(spoof). Layer ``backbone`` wraps
        the frozen EfficientNetB0 (`backbone_of`) and runs it in inference mode always, so it
        is a deterministic feature extractor; ``avg_pool``, ``dense``, ``dropout`` and
        ``p_spoof`` follow.
    """
    _, keras = load_tensorflow()
    from keras import layers

    InferenceMode = custom_layers()["InferenceMode"]
    backbone = make_backbone(weights, input_shape)
    backbone.trainable = False
    inputs = keras.Input(shape=input_shape, name="mel_image")
    x = InferenceMode(backbone, name="backbone")(inputs)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_spoof")(x)
    model = keras.Model(inputs, outputs, name="efficientnetb0_deepfake_detector")
    return compile_model(model, learning_rate, 1, weight_decay, decay_steps)


def compile_model(model, learning_rate=LEARNING_RATE, steps_per_execution=1, weight_decay=0.0,
                  decay_steps=None):
    """Compile with binary cross-entropy and metrics where spoof is positive.

    Parameters
    ----------
    learning_rate : float
        Adam's (initial) learning rate.
    steps_per_execution : int
        Training steps per compiled call (> 1: the same updates, less Python overhead per step).
    weight_decay : float
        Decoupled weight decay (AdamW, Loshchilov & Hutter, ICLR 2019); 0 = Adam, the design
        card's optimizer.
    decay_steps : int, optional
        Cosine decay of the learning rate to 0 over this many steps (Loshchilov & Hutter,
        "SGDR", ICLR 2017); None = constant.
    """
    _, keras = load_tensorflow()

    lr = (keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps) if decay_steps
          else learning_rate)
    optimizer = (keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
                 if weight_decay else keras.optimizers.Adam(learning_rate=lr))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(),
        # no keras.metrics.AUC: its fixed thresholds cannot resolve scores packed near 0.5;
        # callbacks.make_validation_callback logs a rank-based val_auc instead
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"),
                 keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],
        steps_per_execution=steps_per_execution)
    return model


# ----------------------------------------------------------------------------- from scratch

# (channels after MFM, kernel, then: "pool" = 2x2 max-pooling, "bn" = batch norm)
LCNN_LAYERS = [(32, 5, "pool"), (32, 1, "bn"), (48, 3, "pool bn"), (48, 1, "bn"), (64, 3, "pool"),
               (64, 1, "bn"), (32, 3, "bn"), (32, 1, "bn"), (32, 3, "pool")]


def build_lcnn(input_shape=(128, 128, 1), dense_units=160, dropout=0.5):
    """The LCNN countermeasure (Lavrentyeva et al., Interspeech 2019) for 128x128 log-mel
    arrays, uncompiled.

    Nine convolutions with Max-Feature-Map activations (`LCNN_LAYERS`: 5x5, then alternating
    1x1 and 3x3, four 2x2 max-poolings, batch norm after most), as in the paper's LCNN-9; then,
    instead of flattening the whole map, the time axis is averaged (so the decision does not
    depend on where in the window an artefact sits) and the (frequency x channel) map flattened
    -> Dropout -> Dense(``dense_units``) -> MFM -> batch norm -> Dense(1, sigmoid) = P(spoof).

    Parameters
    ----------
    input_shape : tuple
        (n_mels, n_frames, 1), values in [0, 1] (mapped to [-1, 1] by the first layer).
    dense_units : int
        Width of the fully connected layer before its MFM (which halves it).
    dropout : float

    Returns
    -------
    model : keras.Model
        Input (batch, 128, 128, 1) -> (batch, 1); 200,049 weights at the defaults.
    """
    _, keras = load_tensorflow()
    from keras import layers

    MFM = custom_layers()["MaxFeatureMap"]
    inputs = keras.Input(shape=input_shape, name="mel")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_pm1")(inputs)
    for i, (channels, kernel, after) in enumerate(LCNN_LAYERS, 1):
        x = layers.Conv2D(2 * channels, kernel, padding="same", name=f"conv{i}")(x)
        x = MFM(name=f"mfm{i}")(x)
        if "pool" in after:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        if "bn" in after:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
    x = layers.AveragePooling2D((1, x.shape[2]), name="time_average")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(dense_units, name="fc")(x)
    x = MFM(name="fc_mfm")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_spoof")(x)
    return keras.Model(inputs, outputs, name="lcnn_deepfake_detector")


# ----------------------------------------------------------------------------- Whisper


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
                f"folder here and pass --preset /path/to/{source}; or (2) train a detector that "
                "needs no download: --model lcnn (scripts/train_offline.py).") from None
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

    Returns
    -------
    model : keras.Model
        Input (batch, 64524) -> (batch, 1). For whisper_tiny: 403 log-mel frames, 202 encoder
        positions of 384 features, pooled to 384.
    """
    _, keras = load_tensorflow()
    from keras import layers

    encoder, front = whisper_encoder(preset)
    encoder.trainable = False
    custom = custom_layers()
    inputs = keras.Input(shape=input_shape, name="waveform")
    log_mel = custom["WhisperLogMel"](front["num_mels"], front["num_fft_bins"], front["stride"],
                                      name="log_mel")
    x = log_mel(inputs)
    log_mel.set_weights([front["mel_filters"]])
    x = custom["InferenceMode"](encoder, name="backbone")(x)
    x = layers.GlobalAveragePooling1D(name="avg_pool")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_spoof")(x)
    return keras.Model(inputs, outputs, name="whisper_deepfake_detector")


def build(family, features, weights=None, dense_units=None, dropout=None, learning_rate=None,
          weight_decay=0.0, decay_steps=None, preset=None):
    """A compiled model of ``family`` for arrays of ``features`` (None = the family's default).

    Raises
    ------
    ValueError
        An unknown family, arrays of the wrong kind (`check_family_data`), weights given to a
        family other than efficientnetb0, or a preset to a family other than whisper.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model {family!r}; expected one of {', '.join(FAMILIES)}")
    check_family_data(family, features)
    d = FAMILIES[family]["defaults"]
    pick = lambda v, k: d[k] if v is None else v  # noqa: E731
    if preset is not None and family != "whisper":
        raise ValueError(f"--preset applies to --model whisper, not to {family}")
    shape = input_shape(features, family)
    if family == "efficientnetb0":
        return build_model(pick(weights, "weights"), shape, pick(dense_units, "dense_units"),
                           pick(dropout, "dropout"), pick(learning_rate, "learning_rate"),
                           weight_decay, decay_steps)
    if weights is not None and str(weights).lower() != "none":
        raise ValueError(f"--weights applies to efficientnetb0, not to --model {family} (got "
                         f"{weights!r})" + ("; choose the encoder with --preset"
                                            if family == "whisper" else ""))
    if family == "whisper":
        model = build_whisper(pick(preset, "preset"), shape, pick(dense_units, "dense_units"),
                              pick(dropout, "dropout"))
    else:
        model = build_lcnn(shape, pick(dense_units, "dense_units"), pick(dropout, "dropout"))
    return compile_model(model, pick(learning_rate, "learning_rate"), 1, weight_decay,
                         decay_steps)


def param_counts(model):
    """``{"trainable": n, "non_trainable": n}`` weights of ``model``."""
    count = lambda ws: int(sum(np.prod(w.shape) for w in ws))  # noqa: E731
    return {"trainable": count(model.trainable_weights),
            "non_trainable": count(model.non_trainable_weights)}


# ----------------------------------------------------------------------------- parts


def backbone_of(model):
    """The frozen backbone inside a model of `build_model` (EfficientNetB0) or `build_whisper`
    (the Whisper encoder)."""
    return model.get_layer("backbone").layer


WHISPER_BLOCK = "transformer_encoder_layer_"  # KerasHub's names of Whisper's encoder layers


def backbone_blocks(backbone):
    """The backbone's blocks, input to output: EfficientNetB0's MBConv blocks ``block1a`` ...
    ``block7a`` (16 in B0; layer names start with their block's name), or the Whisper
    encoder's transformer layers ``transformer_encoder_layer_0`` ... (4 in tiny)."""
    names = []
    for layer in backbone.layers:
        prefix = layer.name if layer.name.startswith(WHISPER_BLOCK) else layer.name.split("_")[0]
        if prefix.startswith(("block", WHISPER_BLOCK)) and prefix not in names:
            names.append(prefix)
    return names


def unfreeze_top_blocks(model, n_blocks):
    """Make the last ``n_blocks`` blocks of the backbone trainable, and what follows them (the
    final 1x1 convolution ``top_conv`` of EfficientNetB0, the final layer norm of Whisper's
    encoder); everything else stays frozen, and every BatchNormalization layer stays frozen
    (trainable=False, which in Keras also means inference mode; the backbone wrapper runs in
    inference mode anyway). The standard second phase of transfer learning (keras-io "Image
    classification via fine-tuning with EfficientNet").

    Parameters
    ----------
    model : keras.Model
        From `build_model` or `build_whisper`.
    n_blocks : int
        1 to 16 for EfficientNetB0 (MBConv blocks), 1 to the number of transformer layers for
        Whisper (4 in tiny).

    Returns
    -------
    blocks : list of str
        The unfrozen blocks, e.g. ``["block6d", "block7a"]`` for 2.
    """
    _, keras = load_tensorflow()

    backbone = backbone_of(model)
    blocks = backbone_blocks(backbone)
    whisper = blocks[0].startswith(WHISPER_BLOCK)
    what = "Whisper encoder's transformer layers" if whisper else "EfficientNetB0's MBConv blocks"
    if not 1 <= n_blocks <= len(blocks):
        raise ValueError(f"--fine-tune-blocks must be between 1 and {len(blocks)} (the "
                         f"{what}), got {n_blocks}")
    chosen = set(blocks[-n_blocks:]) | ({"encoder_layer_norm"} if whisper else {"top"})
    backbone.trainable = True  # sets every layer; then choose
    for layer in backbone.layers:
        name = layer.name if whisper else layer.name.split("_")[0]
        layer.trainable = (name in chosen
                           and not isinstance(layer, keras.layers.BatchNormalization))
    return blocks[-n_blocks:]


def feature_extractor(model):
    """The frozen part of ``model``: its input -> pooled features, (batch, 1280) for
    EfficientNetB0, (batch, hidden_dim) for Whisper (384 in tiny)."""
    _, keras = load_tensorflow()

    return keras.Model(model.input, model.get_layer("avg_pool").output, name="extractor")


def head_model(model, learning_rate=LEARNING_RATE, steps_per_execution=32, weight_decay=0.0,
               decay_steps=None):
    """A compiled model over pooled features that shares ``model``'s head layers (Dense,
    Dropout, Dense): training it trains ``model``.

    Returns
    -------
    head : keras.Model
        Input (batch, features) -> output (batch, 1) = P(spoof); 1280 features for
        EfficientNetB0.
    """
    _, keras = load_tensorflow()

    pooled = model.get_layer("avg_pool").output
    x = inputs = keras.Input(shape=pooled.shape[1:], name="pooled_features")
    for name in ("dense", "dropout", "p_spoof"):
        x = model.get_layer(name)(x)
    # steps on 1280 numbers take microseconds: Keras' per-step overhead would dominate
    return compile_model(keras.Model(inputs, x, name="head"), learning_rate,
                         steps_per_execution, weight_decay, decay_steps)


def backbone_key(model):
    """A fingerprint of every weight before the pooled features (cache key): the backbone's,
    and for Whisper the mel filters of its front end. Same key, same features."""
    import hashlib

    h = hashlib.sha1()
    for w in feature_extractor(model).weights:
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:16]


def logit_parts(model):
    """The model up to its last layer, and that layer's weights: ``logit = hidden(x) @ kernel +
    bias`` is log(P(spoof) / P(bonafide)), taken before the sigmoid so extreme scores stay finite.

    Returns
    -------
    hidden : keras.Model
        Image batch (n, 128, 128, 3) -> (n, dense_units).
    kernel, bias : np.ndarray, float64
    """
    _, keras = load_tensorflow()

    head = model.get_layer("p_spoof")
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in head.get_weights())
    return keras.Model(model.input, head.input), kernel, bias


def logits_from_hidden(hidden, kernel, bias):
    """The last layer, before its sigmoid: ``hidden @ kernel + bias`` in float64, shape (n,)."""
    return (np.asarray(hidden, np.float64) @ kernel + bias).reshape(-1)


def predict_logits(model, ds, progress=False, total=None):
    """Batched log-odds of spoof for every element of ``ds``, in order (see `logit_parts`).

    Parameters
    ----------
    progress : bool
        A progress bar over the batches on stderr (``total`` of them).

    Returns
    -------
    logits : np.ndarray, shape (n,), float64
        ``log(P(spoof) / P(bonafide))``; the ASVspoof score is ``-logits``.
    """
    hidden, kernel, bias = logit_parts(model)
    if not progress:
        return logits_from_hidden(hidden.predict(ds, verbose=0), kernel, bias)
    from tqdm import tqdm

    parts = [hidden.predict_on_batch(x) for x in tqdm(ds, total=total, desc="scoring",
                                                       unit="batch")]
    return logits_from_hidden(np.concatenate(parts) if parts else np.zeros((0, 1)), kernel,
                              bias)


# ----------------------------------------------------------------------------- files


def save_model_atomic(model, path, meta):
    """Save ``model`` as a .keras archive with ``meta`` (JSON) stored inside it, atomically."""
    with atomic_output(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(META_NAME, json.dumps(meta, indent=2))


def read_model_meta(path):
    """The metadata (feature parameters, label convention, ...) stored in a .keras file by
    `save_model_atomic`; None if it has none."""
    with zipfile.ZipFile(path) as z:
        if META_NAME not in z.namelist():
            return None
        return json.loads(z.read(META_NAME))


def load_model(path, meta=None):
    """Load a .keras model written by this project, in Keras safe mode (no arbitrary code).

    Parameters
    ----------
    meta : dict, optional
        Its `read_model_meta` (read when not given): a Whisper model needs KerasHub's layers
        registered first (`load_keras_hub`, which raises `WeightsUnavailable` without it).
    """
    _, keras = load_tensorflow()

    meta = read_model_meta(path) if meta is None else meta
    if (meta or {}).get("model") == "whisper":
        load_keras_hub()
    custom_layers()
    return keras.models.load_model(path, safe_mode=True, compile=False)
