"""The models: architecture, compilation, fine-tuning, and saving with embedded metadata.

The design card: EfficientNetB0 (ImageNet, include_top=False, frozen) -> GlobalAveragePooling2D
-> Dense(128, relu) -> Dropout(0.5) -> Dense(1, sigmoid) = P(spoof). Adam(1e-4), binary
cross-entropy. Label 1 = spoof.

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
# -----------------------------------------------------------------------------


class WeightsUnavailable(RuntimeError):
    """The requested backbone weights cannot be loaded."""


def input_shape(features):
    """The model input shape for arrays of ``features["shape"]``: (n_mels, n_frames, 3)."""
    return (*features["shape"], CHANNELS)


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
    import keras

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


_INFERENCE_MODE = None


def inference_mode_layer():
    """The `InferenceMode` wrapper class, defined and registered with Keras on first use (so
    that importing this module does not import Keras). Call it before loading a saved model.
    """
    global _INFERENCE_MODE
    if _INFERENCE_MODE is not None:
        return _INFERENCE_MODE
    import keras

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

    _INFERENCE_MODE = InferenceMode
    return InferenceMode


def build_model(weights=WEIGHTS, input_shape=(128, 128, CHANNELS), dense_units=DENSE_UNITS,
                dropout=DROPOUT, learning_rate=LEARNING_RATE):
    """The design-card model, compiled.

    Parameters
    ----------
    weights : str or None
        See `make_backbone`.
    input_shape : tuple
        (128, 128, 3) images with values in [0, 255] (see `data_loader.to_model_input`).
    dense_units, dropout, learning_rate : number

    Returns
    -------
    model : keras.Model
        Input (batch, 128, 128, 3) -> output (batch, 1) = P(spoof). Layer ``backbone`` wraps
        the frozen EfficientNetB0 (`backbone_of`) and runs it in inference mode always, so it
        is a deterministic feature extractor; ``avg_pool``, ``dense``, ``dropout`` and
        ``p_spoof`` follow.
    """
    import keras
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
    return compile_model(model, learning_rate)


def compile_model(model, learning_rate=LEARNING_RATE, steps_per_execution=1):
    """Compile with the design card's optimizer and loss, and metrics where spoof is positive.
    ``steps_per_execution`` > 1 runs several training steps per compiled call (the same updates,
    less Python overhead per step)."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc"),
                 keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],
        steps_per_execution=steps_per_execution)
    return model


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
    import keras

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
    import keras

    return keras.Model(model.input, model.get_layer("avg_pool").output, name="extractor")


def head_model(model, learning_rate=LEARNING_RATE, steps_per_execution=32):
    """A compiled model over pooled features that shares ``model``'s head layers (Dense,
    Dropout, Dense): training it trains ``model``.

    Returns
    -------
    head : keras.Model
        Input (batch, 1280) -> output (batch, 1) = P(spoof).
    """
    import keras

    pooled = model.get_layer("avg_pool").output
    x = inputs = keras.Input(shape=pooled.shape[1:], name="pooled_features")
    for name in ("dense", "dropout", "p_spoof"):
        x = model.get_layer(name)(x)
    # steps on 1280 numbers take microseconds: Keras' per-step overhead would dominate
    return compile_model(keras.Model(inputs, x, name="head"), learning_rate,
                         steps_per_execution)


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
    import keras

    head = model.get_layer("p_spoof")
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in head.get_weights())
    return keras.Model(model.input, head.input), kernel, bias


def logits_from_hidden(hidden, kernel, bias):
    """The last layer, before its sigmoid: ``hidden @ kernel + bias`` in float64, shape (n,)."""
    return (np.asarray(hidden, np.float64) @ kernel + bias).reshape(-1)


def predict_logits(model, ds):
    """Batched log-odds of spoof for every element of ``ds``, in order (see `logit_parts`).

    Returns
    -------
    logits : np.ndarray, shape (n,), float64
        ``log(P(spoof) / P(bonafide))``; the ASVspoof score is ``-logits``.
    """
    hidden, kernel, bias = logit_parts(model)
    return logits_from_hidden(hidden.predict(ds, verbose=0), kernel, bias)


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
    import keras

    inference_mode_layer()
    return keras.models.load_model(path, safe_mode=True, compile=False)
