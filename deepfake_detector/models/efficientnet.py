"""``--model efficientnetb0``, the design card (the default family).

EfficientNetB0 (Tan & Le, ICML 2019; ImageNet weights, include_top=False, frozen) ->
GlobalAveragePooling2D -> Dense(128, relu) -> Dropout(0.5) -> Dense(1, sigmoid) = P(spoof).
Adam(1e-4), binary cross-entropy. Reads 128x128 log-mel arrays repeated to three channels and
scaled to [0, 255] (``rgb255``). Needs ImageNet weights to be useful.
"""

from pathlib import Path

from .common import (LEARNING_RATE, WeightsUnavailable, compile_model, inference_mode_layer,
                     load_tensorflow)

# -----------------------------------------------------------------------------
WEIGHTS = "imagenet"
DENSE_UNITS = 128
DROPOUT = 0.5
CHANNELS = 3  # the mel array repeated to EfficientNet's three input channels
IMAGENET_FILE = "efficientnetb0_notop.h5"
# the family (see deepfake_detector.models.FAMILIES): its arrays, input transform, a frozen
# backbone (so train.py may cache its features and fine-tune it), and its training defaults
SPEC = {"features": "mel", "input": "rgb255", "channels": CHANNELS, "frozen_backbone": True,
        "defaults": {"weights": WEIGHTS, "preset": None, "epochs": 10, "batch_size": 16,
                     "learning_rate": LEARNING_RATE, "lr_schedule": "constant",
                     "weight_decay": 0.0, "dense_units": DENSE_UNITS, "dropout": DROPOUT}}
BLOCKS = "EfficientNetB0's MBConv blocks"
# -----------------------------------------------------------------------------


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


def build_model(weights=WEIGHTS, input_shape=(128, 128, CHANNELS), dense_units=DENSE_UNITS,
                dropout=DROPOUT, learning_rate=LEARNING_RATE, weight_decay=0.0,
                decay_steps=None, compile=True):
    """The design-card model, compiled (unless ``compile=False``).

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
    return compile_model(model, learning_rate, 1, weight_decay, decay_steps) if compile else model



def build(input_shape, dense_units=DENSE_UNITS, dropout=DROPOUT, weights=WEIGHTS):
    """The family's model, uncompiled (`build_model` without compiling)."""
    return build_model(weights, input_shape, dense_units, dropout, compile=False)


def block_of(name):
    """The MBConv block (``block1a`` ... ``block7a``; 16 in B0) of a layer of the backbone, from
    its name (layer names start with their block's name); None outside the blocks."""
    prefix = name.split("_")[0]
    return prefix if prefix.startswith("block") else None


def is_top(name):
    """Whether a layer follows the last block (the final 1x1 convolution ``top_conv`` and its
    batch norm and activation): unfrozen with the top blocks."""
    return name.split("_")[0] == "top"
