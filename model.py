"""The models: every architecture family, compilation, fine-tuning, and saving with embedded
metadata. Every family ends in a ``p_spoof`` layer, Dense(1, sigmoid) = P(spoof); label 1 = spoof.

- ``efficientnetb0``, the design card (the default): EfficientNetB0 (ImageNet, include_top=False,
  frozen) -> GlobalAveragePooling2D -> Dense(128, relu) -> Dropout(0.5) -> Dense(1, sigmoid).
  Adam(1e-4), binary cross-entropy. Needs ImageNet weights to be useful.
- ``lcnn``: a light CNN with Max-Feature-Map activations trained from random initialization, the
  ASVspoof 2019 countermeasure of Lavrentyeva et al. ("STC antispoofing systems for the ASVspoof
  2019 challenge", Interspeech 2019), on the same 128x128 log-mel arrays. Works offline.

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

# -----------------------------------------------------------------------------
WEIGHTS = "imagenet"
DENSE_UNITS = 128
DROPOUT = 0.5
LEARNING_RATE = 1e-4
CHANNELS = 3  # the mel array repeated to EfficientNet's three input channels
PREDICT_BATCH_SIZE = 32  # prediction batch: fastest on a 2-core CPU (149 files/s vs 98 at 256)
META_NAME = "deepfake_meta.json"  # metadata file stored inside each .keras archive
IMAGENET_FILE = "efficientnetb0_notop.h5"
# Each family: how it takes the arrays (data_loader.to_model_input), whether its backbone is
# frozen (so train.py may cache its features and fine-tune it), and its training defaults,
# chosen by measurement (docs/recipes.md).
FAMILIES = {
    "efficientnetb0": {"input": "rgb255", "channels": 3, "frozen_backbone": True,
                       "defaults": {"weights": WEIGHTS, "epochs": 10, "batch_size": 16,
                                    "learning_rate": LEARNING_RATE, "lr_schedule": "constant",
                                    "weight_decay": 0.0, "dense_units": DENSE_UNITS,
                                    "dropout": DROPOUT}},
    "lcnn": {"input": "mel", "channels": 1, "frozen_backbone": False,
             "defaults": {"weights": "none", "epochs": 20, "batch_size": 32,
                          "learning_rate": 3e-4, "lr_schedule": "cosine", "weight_decay": 1e-4,
                          "dense_units": 160, "dropout": 0.5}},
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
    """The requested backbone weights cannot be loaded."""


def input_shape(features, family=MODEL):
    """The model input shape for arrays of ``features["shape"]``: (n_mels, n_frames, channels),
    3 channels for EfficientNetB0, 1 for the from-scratch families."""
    return (*features["shape"], FAMILIES[family]["channels"])


def input_spec(family, features):
    """How a model of ``family`` takes the arrays: ``kind`` (`data_loader.to_model_input`),
    shape and value range; recorded in config.json and inside every saved model."""
    kind = FAMILIES[family]["input"]
    return {"kind": kind, "shape": list(input_shape(features, family)),
            "range": [0, 255] if kind == "rgb255" else [0, 1],
            "transform": f"data_loader.to_model_input(x, {kind!r})"
            + (": x * 255, repeated to 3 channels" if kind == "rgb255" else ": x, one channel")}


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
    importing this module does not import Keras): ``InferenceMode`` and ``MaxFeatureMap``. Call
    it before loading a saved model."""
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

    _CUSTOM.update(InferenceMode=InferenceMode, MaxFeatureMap=MaxFeatureMap)
    return _CUSTOM


def inference_mode_layer():
    """The `InferenceMode` wrapper class (see `custom_layers`)."""
    return custom_layers()["InferenceMode"]


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

    InferenceMode = inference_mode_layer()
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


def build(family, features, weights=None, dense_units=None, dropout=None, learning_rate=None,
          weight_decay=0.0, decay_steps=None):
    """A compiled model of ``family`` for arrays of ``features`` (None = the family's default).

    Raises
    ------
    ValueError
        An unknown family, or weights given to a family that trains from random
        initialization.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model {family!r}; expected one of {', '.join(FAMILIES)}")
    d = FAMILIES[family]["defaults"]
    pick = lambda v, k: d[k] if v is None else v  # noqa: E731
    shape = input_shape(features, family)
    if family == "efficientnetb0":
        return build_model(pick(weights, "weights"), shape, pick(dense_units, "dense_units"),
                           pick(dropout, "dropout"), pick(learning_rate, "learning_rate"),
                           weight_decay, decay_steps)
    if weights is not None and str(weights).lower() != "none":
        raise ValueError(f"--model {family} trains from random initialization; --weights "
                         f"applies to efficientnetb0 (got {weights!r})")
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
    """The EfficientNetB0 inside a model built by `build_model`."""
    return model.get_layer("backbone").layer


def backbone_blocks(backbone):
    """Names of EfficientNetB0's MBConv blocks, input to output: ``block1a`` ... ``block7a``
    (16 in B0). Layer names start with their block's name."""
    names = []
    for layer in backbone.layers:
        prefix = layer.name.split("_")[0]
        if prefix.startswith("block") and prefix not in names:
            names.append(prefix)
    return names


def unfreeze_top_blocks(model, n_blocks):
    """Make the last ``n_blocks`` MBConv blocks of the backbone, and its final 1x1 convolution
    (``top_conv``), trainable; everything else stays frozen, and every BatchNormalization layer
    stays frozen (trainable=False, which in Keras also means inference mode; the backbone
    wrapper runs in inference mode anyway). The standard second phase of transfer learning
    (keras-io "Image classification via fine-tuning with EfficientNet").

    Parameters
    ----------
    model : keras.Model
        From `build_model`.
    n_blocks : int
        1 to 16.

    Returns
    -------
    blocks : list of str
        The unfrozen blocks, e.g. ``["block6d", "block7a"]`` for 2.
    """
    _, keras = load_tensorflow()

    backbone = backbone_of(model)
    blocks = backbone_blocks(backbone)
    if not 1 <= n_blocks <= len(blocks):
        raise ValueError(f"--fine-tune-blocks must be between 1 and {len(blocks)} "
                         f"(EfficientNetB0's MBConv blocks), got {n_blocks}")
    chosen = set(blocks[-n_blocks:]) | {"top"}
    backbone.trainable = True  # sets every layer; then choose
    for layer in backbone.layers:
        layer.trainable = (layer.name.split("_")[0] in chosen
                           and not isinstance(layer, keras.layers.BatchNormalization))
    return blocks[-n_blocks:]


def feature_extractor(model):
    """The frozen part of ``model``: image (batch, 128, 128, 3) -> pooled features (batch, 1280)."""
    _, keras = load_tensorflow()

    return keras.Model(model.input, model.get_layer("avg_pool").output, name="extractor")


def head_model(model, learning_rate=LEARNING_RATE, steps_per_execution=32, weight_decay=0.0,
               decay_steps=None):
    """A compiled model over pooled features that shares ``model``'s head layers (Dense,
    Dropout, Dense): training it trains ``model``.

    Returns
    -------
    head : keras.Model
        Input (batch, 1280) -> output (batch, 1) = P(spoof).
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
    """A fingerprint of the frozen backbone's weights (cache key): same key, same features."""
    import hashlib

    h = hashlib.sha1()
    for w in backbone_of(model).weights:
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


def load_model(path):
    """Load a .keras model written by this project, in Keras safe mode (no arbitrary code)."""
    _, keras = load_tensorflow()

    custom_layers()
    return keras.models.load_model(path, safe_mode=True, compile=False)
