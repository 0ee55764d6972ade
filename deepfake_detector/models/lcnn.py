"""``--model lcnn``: a light CNN trained from random initialization, on the 128x128 log-mel arrays.

The ASVspoof 2019 countermeasure of Lavrentyeva et al. ("STC antispoofing systems for the
ASVspoof 2019 challenge", Interspeech 2019), with Max-Feature-Map activations. Works offline.
"""

from .common import KERAS_PACKAGE, load_tensorflow

# -----------------------------------------------------------------------------
# (channels after MFM, kernel, then: "pool" = 2x2 max-pooling, "bn" = batch norm)
LCNN_LAYERS = [(32, 5, "pool"), (32, 1, "bn"), (48, 3, "pool bn"), (48, 1, "bn"), (64, 3, "pool"),
               (64, 1, "bn"), (32, 3, "bn"), (32, 1, "bn"), (32, 3, "pool")]
DENSE_UNITS = 160
DROPOUT = 0.5
# the family (see deepfake_detector.models.FAMILIES); defaults measured in docs/recipes.md
SPEC = {"features": "mel", "input": "mel", "channels": 1, "frozen_backbone": False,
        "defaults": {"weights": "none", "preset": None, "epochs": 20, "batch_size": 32,
                     "learning_rate": 3e-4, "lr_schedule": "cosine", "weight_decay": 1e-4,
                     "dense_units": DENSE_UNITS, "dropout": DROPOUT}}
# -----------------------------------------------------------------------------

_CUSTOM = {}


def custom_layers():
    """The family's Keras layers, defined and registered on first use: ``MaxFeatureMap``."""
    if _CUSTOM:
        return _CUSTOM
    _, keras = load_tensorflow()

    @keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
    class MaxFeatureMap(keras.layers.Layer):
        """Max-Feature-Map activation (Wu et al., "A light CNN for deep face representation
        with noisy labels", 2018): the channels split in two halves, element-wise maximum;
        (..., 2c) -> (..., c)."""

        def call(self, inputs):
            a, b = keras.ops.split(inputs, 2, axis=-1)
            return keras.ops.maximum(a, b)

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], input_shape[-1] // 2)

    _CUSTOM["MaxFeatureMap"] = MaxFeatureMap
    return _CUSTOM


def build_lcnn(input_shape=(128, 128, 1), dense_units=DENSE_UNITS, dropout=DROPOUT):
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



def build(input_shape, dense_units=DENSE_UNITS, dropout=DROPOUT):
    """The family's model, uncompiled (`build_lcnn`)."""
    return build_lcnn(input_shape, dense_units, dropout)
