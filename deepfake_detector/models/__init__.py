"""The model families and their registry: ``train.py --model NAME`` -> one module of this folder.

- ``efficientnetb0`` (`efficientnet`), the design card, the default: a frozen ImageNet
  EfficientNetB0 on 128x128 log-mel arrays and a small head.
- ``lcnn`` (`lcnn`): a light CNN with Max-Feature-Map activations trained from scratch on the
  same arrays; works offline.
- ``whisper`` (`whisper`): a frozen Whisper encoder on the waveform window, the design-card head.
- ``aasist`` (`aasist`): AASIST (ICASSP 2022) on the raw 64,600-sample waveform, trained end to
  end or started from the official checkpoints (scripts/import_aasist.py).

Each family module holds its architecture, its custom layers, its defaults (``SPEC``) and a
``build(input_shape, dense_units, dropout, **options)`` returning an uncompiled model that ends
in ``p_spoof`` = Dense(1, sigmoid) = P(spoof) (label 1 = spoof). Families with a frozen
backbone also give ``block_of`` and ``is_top`` (which layers ``--fine-tune-blocks`` unfreezes).
What every family shares (compilation, fine-tuning, logits, saving and loading with metadata)
is in `common`. Adding a family = one module here + one line in `MODULES`.
"""

from ..features import check_kind
from . import aasist, efficientnet, lcnn, whisper
from .common import (KERAS_PACKAGE, LEARNING_RATE, LR_SCHEDULES, META_NAME,  # noqa: F401
                     PREDICT_BATCH_SIZE, WeightsUnavailable, backbone_blocks, backbone_key,
                     backbone_of, batch_function, compile_model, encoder_frozen, feature_extractor,
                     head_hidden, head_layers, head_model,
                     inference_mode_layer, load_tensorflow, logit_parts, logits_from_hidden,
                     param_counts, predict_logits, read_model_meta, save_model_atomic,
                     trainable_batchnorms, unfreeze_blocks)

# -----------------------------------------------------------------------------
MODULES = {"efficientnetb0": efficientnet, "lcnn": lcnn, "whisper": whisper, "aasist": aasist}
# Each family: the arrays it reads (features.KINDS), how it takes them
# (datasets.to_model_input), whether its backbone is frozen (so train.py may cache its features
# and fine-tune it), and its training defaults (None = does not apply), chosen by measurement
# (docs/recipes.md)
FAMILIES = {name: module.SPEC for name, module in MODULES.items()}
MODEL = "efficientnetb0"  # the design card
# options that only some families take: the flag, and the families that take it (--preset: a
# Whisper encoder, or the AASIST configuration)
FAMILY_OPTIONS = {"weights": ("--weights", ("efficientnetb0",)),
                  "preset": ("--preset", ("whisper", "aasist"))}
TRANSFORMS = {"rgb255": ([0, 255], "x * 255, repeated to 3 channels"),
              "mel": ([0, 1], "x, one channel"),
              "waveform": ([-1, 1], "int16 samples / 32768")}
# -----------------------------------------------------------------------------


def check_family_data(family, features, data_dir="the data"):
    """Refuse arrays of the wrong kind for ``family`` (mel arrays for a waveform model, or the
    reverse), naming the preprocess.py command that makes the right ones.

    Raises
    ------
    features.FeatureMismatch
    """
    spec = FAMILIES[family]
    check_kind(spec["features"], features, f"--model {family}", data_dir, "it",
               spec.get("clip_samples"))


def weights_info(family, preset):
    """Where a family's preset weights came from (the Whisper family's ``import.json``), for
    config.json; None when the family or preset records nothing."""
    provenance = getattr(MODULES[family], "preset_provenance", None)
    return provenance(preset) if provenance and preset else None


def input_shape(features, family=MODEL):
    """The model input shape for arrays of ``features["shape"]``: (n_mels, n_frames, channels),
    3 channels for EfficientNetB0, 1 for LCNN; (clip_samples,) for Whisper's waveforms."""
    channels = FAMILIES[family]["channels"]
    return (*features["shape"], channels) if channels else tuple(features["shape"])


def input_spec(family, features):
    """How a model of ``family`` takes the arrays: ``kind`` (`datasets.to_model_input`),
    shape and value range; recorded in config.json and inside every saved model."""
    kind = FAMILIES[family]["input"]
    value_range, what = TRANSFORMS[kind]
    return {"kind": kind, "shape": list(input_shape(features, family)), "range": value_range,
            "transform": f"data_loader.to_model_input(x, {kind!r}): {what}"}


def build(family, features, weights=None, dense_units=None, dropout=None, learning_rate=None,
          weight_decay=0.0, decay_steps=None, preset=None, freeze_encoder=False):
    """A compiled model of ``family`` for arrays of ``features`` (None = the family's default);
    ``freeze_encoder``: AASIST's encoder frozen (`aasist.freeze_encoder_layers`).

    Raises
    ------
    ValueError
        An unknown family, arrays of the wrong kind (`check_family_data`), or an option the
        family does not take (``weights``: efficientnetb0 only; ``preset``: whisper only).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model {family!r}; expected one of {', '.join(FAMILIES)}")
    check_family_data(family, features)
    d = FAMILIES[family]["defaults"]
    pick = lambda v, k: d[k] if v is None else v  # noqa: E731
    given = {"preset": preset, "weights": weights}
    options = {"freeze_encoder": True} if freeze_encoder else {}
    if freeze_encoder and family != "aasist":
        raise ValueError(f"--freeze-encoder applies to --model aasist, not to {family}")
    for key, value in given.items():
        flag, owners = FAMILY_OPTIONS[key]
        if family in owners:
            options[key] = pick(value, key)
        elif value is not None and str(value).lower() != "none":
            hint = ("; choose the encoder with --preset" if family == "whisper" and key == "weights"
                    else "")
            raise ValueError(f"{flag} applies to {'--model ' if key == 'preset' else ''}"
                             f"{' and '.join(owners)}, not to "
                             f"{'--model ' if key == 'weights' else ''}{family} (got "
                             f"{value!r}){hint}")
    model = MODULES[family].build(input_shape(features, family), pick(dense_units, "dense_units"),
                                  pick(dropout, "dropout"), **options)
    return compile_model(model, pick(learning_rate, "learning_rate"), 1, weight_decay,
                         decay_steps)


def predict_batch_size(meta):
    """The prediction batch for a saved model's family (``meta["model"]``): its SPEC's
    ``predict_batch_size``, else `PREDICT_BATCH_SIZE` (the fastest on a 2-core CPU for the
    spectrogram families)."""
    return FAMILIES.get((meta or {}).get("model"), {}).get("predict_batch_size",
                                                          PREDICT_BATCH_SIZE)


def custom_layers():
    """Every Keras layer of the project, by class name (registered with Keras on first use):
    call before loading a saved model."""
    layers = {"InferenceMode": inference_mode_layer()}
    for module in MODULES.values():
        layers.update(getattr(module, "custom_layers", dict)())
    return layers


def unfreeze_top_blocks(model, n_blocks):
    """Make the last ``n_blocks`` blocks of a frozen backbone trainable, and what follows them
    (EfficientNetB0's ``top_conv``, the Whisper encoder's final layer norm); see
    `common.unfreeze_blocks`.

    Parameters
    ----------
    model : keras.Model
        Of a family with a frozen backbone (``FAMILIES[name]["frozen_backbone"]``).
    n_blocks : int
        1 to 16 for EfficientNetB0 (MBConv blocks), 1 to the number of transformer layers for
        Whisper (4 in tiny).

    Returns
    -------
    blocks : list of str
        The unfrozen blocks, e.g. ``["block6d", "block7a"]`` for 2.
    """
    backbone = backbone_of(model)
    for module in MODULES.values():
        if hasattr(module, "block_of") and backbone_blocks(backbone, module.block_of):
            return unfreeze_blocks(backbone, n_blocks, module.block_of, module.is_top,
                                   module.BLOCKS)
    raise ValueError(f"model {model.name} has no backbone blocks to fine-tune")


def load_model(path, meta=None):
    """Load a .keras model written by this project, in Keras safe mode (no arbitrary code).

    Parameters
    ----------
    meta : dict, optional
        Its `read_model_meta` (read when not given): a Whisper model needs KerasHub's layers
        registered first (`whisper.load_keras_hub`, which raises `WeightsUnavailable` without
        it).
    """
    _, keras = load_tensorflow()

    meta = read_model_meta(path) if meta is None else meta
    if (meta or {}).get("model") == "whisper":
        whisper.load_keras_hub()
    custom_layers()
    return keras.models.load_model(path, safe_mode=True, compile=False)
