"""Train the design-card detector on preprocessed mel-spectrograms.

Model: EfficientNetB0 (ImageNet, include_top=False, frozen) -> GlobalAveragePooling2D ->
Dense(128, relu) -> Dropout(0.5) -> Dense(1, sigmoid) = P(spoof). Adam(1e-4), binary
cross-entropy, 10 epochs, batch 16. Label 1 = spoof.

Each run writes ``runs/<name>/``:

- ``model.keras``   the model after the last epoch,
- ``best.keras``    the checkpoint with the best validation ``--monitor`` (default: lowest loss),
- ``threshold.json`` the decision threshold of each model, calibrated on the validation part,
- ``config.json``   every argument, the feature parameters, seed, data, versions,
- ``history.csv``   per-epoch loss and metrics,
- ``split.csv``     which utterances were used for training and which for validation.

Both model files also carry the feature parameters inside them (``deepfake_meta.json`` in the
.keras archive), so evaluation and prediction can never drift from training.

Example::

    python train.py --data data/features/train --run runs/baseline            # 80/20 split
    python train.py --data data/features/train --val-data data/features/dev   # official dev
    python train.py --weights none --epochs 2                                 # offline smoke run

Re-running an interrupted run with the same ``--run`` resumes from its last finished epoch.

Beyond the design card (off by default, except that the threshold is calibrated:
``--calibrate eer``; see README "Beyond the design card")::

    python train.py --class-weight balanced --balanced-batches     # class imbalance
    python train.py --calibrate far:0.05 --monitor eer --early-stopping 3
    python train.py --fine-tune-blocks 2 --fine-tune-epochs 5      # second, unfrozen phase
    python train.py --freq-mask 16 --time-mask 16 --random-crop --noise-snr 10,40
    python train.py --seeds 1,2,3 --test-data data/features/dev    # mean and spread
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's INFO/WARNING chatter

import numpy as np
import pandas as pd

import data_loader
import preprocess

# -----------------------------------------------------------------------------
EPOCHS = 10
BATCH_SIZE = 16
LEARNING_RATE = 1e-4
DENSE_UNITS = 128
DROPOUT = 0.5
WEIGHTS = "imagenet"
INPUT_SHAPE = (128, 128, 3)
RUNS_DIR = "runs"
META_NAME = "deepfake_meta.json"  # metadata file stored inside each .keras archive
IMAGENET_FILE = "efficientnetb0_notop.h5"
# Recipes beyond the design card (all off by default except the calibration, which only adds
# threshold.json and never changes the model)
CLASS_WEIGHT = "none"  # or "balanced" or "W_BONA,W_SPOOF"
CALIBRATE = "eer"  # decision threshold chosen on the validation data: eer, f1, far:RATE, none
MONITOR = "loss"  # validation metric that picks best.keras (and early stopping): loss, eer, auc
FINE_TUNE_EPOCHS = 5
FINE_TUNE_LR = 1e-5
MONITORS = {"loss": ("val_loss", "min"), "eer": ("val_eer", "min"), "auc": ("val_auc", "max")}
# -----------------------------------------------------------------------------


class WeightsUnavailable(RuntimeError):
    """The requested backbone weights cannot be loaded."""


def make_backbone(weights=WEIGHTS, input_shape=INPUT_SHAPE):
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


def load_model(path):
    """Load a .keras model written by this project, in Keras safe mode (no arbitrary code)."""
    import keras

    inference_mode_layer()
    return keras.models.load_model(path, safe_mode=True, compile=False)


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


def build_model(weights=WEIGHTS, input_shape=INPUT_SHAPE, dense_units=DENSE_UNITS,
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


# ----------------------------------------------------------------------------- feature cache
# With a frozen backbone, EfficientNetB0 + pooling maps a given input to the same 1280 numbers in
# every epoch. Computing them once and training the head on them is the same training, minus
# (epochs - 1) backbone passes. The head layers are shared with the full model, so the full model
# is trained too and is what gets saved.


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


def cached_features(model, data_dir, manifest, features, cache_dir=None, batch_size=32,
                    progress=True, distributed=False):
    """Pooled backbone features of every utterance of a preprocessed folder, computed once.

    The features of the whole manifest are stored as ``<cache_dir>/<backbone key>.npy``
    (float32, shape (n_utterances, 1280), manifest order) with the utterance ids beside it,
    written batch by batch to a memory-mapped file and renamed into place when complete.
    Later runs with the same backbone weights (any seed, split or head) reuse them.

    Parameters
    ----------
    model : keras.Model
        From `build_model`.
    data_dir : str or Path
    manifest : pandas.DataFrame
        `data_loader.load_manifest` of ``data_dir``.
    features : dict
        Feature parameters of ``data_dir``.
    cache_dir : str or Path, optional
        Default ``<data_dir>/backbone_cache``.
    distributed : bool
        ``model`` was built under a multi-replica ``tf.distribute`` strategy.

    Returns
    -------
    table : pandas.DataFrame
        Indexed by utt_id; one column ``row`` into ``array``.
    array : np.ndarray (memory-mapped), shape (n_utterances, 1280), float32
    """
    from tqdm import tqdm

    cache_dir = Path(cache_dir or Path(data_dir) / "backbone_cache")
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = backbone_key(model)
    path, ids_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.ids"
    ids = list(manifest["utt_id"])
    if not (path.exists() and ids_path.exists() and ids_path.read_text().split() == ids):
        import keras

        extractor = feature_extractor(model)
        if distributed:  # a local copy: called directly, mirrored variables give per-replica values
            local = keras.models.clone_model(extractor)
            local.set_weights(extractor.get_weights())
            extractor = local
        ds = data_loader.make_dataset(manifest, batch_size, shape=features["shape"],
                                      with_labels=False)
        with preprocess.atomic_output(path, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(len(ids), extractor.output_shape[-1]))
            i = 0
            for x in tqdm(ds, total=-(-len(ids) // batch_size), unit="batch",
                          desc=f"backbone features {Path(data_dir).name}", disable=not progress):
                f = extractor.predict_on_batch(x)  # compiled: eager calls peak at ~3 GB RSS
                out[i:i + len(f)] = f
                i += len(f)
            out.flush()
            del out
        preprocess.write_text_atomic(ids_path, "\n".join(ids) + "\n")
    array = np.load(path, mmap_mode="r")
    return pd.DataFrame({"row": np.arange(len(ids))}, index=pd.Index(ids, name="utt_id")), array


def feature_dataset(array, rows, targets, batch_size, shuffle=False, seed=data_loader.SEED,
                    balanced=False):
    """tf.data over cached features, in exactly the order `data_loader.make_dataset` reads the
    same utterances with the same seed (same batches, same order; `data_loader.train_indices`).
    """
    import tensorflow as tf

    x = tf.constant(np.asarray(array[np.asarray(rows)], dtype=np.float32))
    y = tf.constant(np.asarray(targets, dtype=np.float32))
    index = data_loader.train_indices(np.asarray(targets), batch_size, shuffle, seed, balanced)
    ds = index.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- saving


def save_model_atomic(model, path, meta):
    """Save ``model`` as a .keras archive with ``meta`` (JSON) stored inside it, atomically."""
    with preprocess.atomic_output(path, suffix=".keras") as tmp:
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


def make_checkpoint_callback(path, meta, model, monitor="val_loss", mode="min", best=None,
                             store=None):
    """Keep the model with the best ``monitor`` and write it to ``path`` when training ends.

    After each improving epoch the trainable weights are written (atomically, about 650 kB for
    the head) to ``store`` (default ``<path>.trainable.npz``) instead of the whole 19 MB model,
    which made short epochs on cached features slow. A resumed run starts from that file. At
    the end of training, ``path`` gets the full model (``model``, the end-to-end model even when
    its head is trained on cached features) with the best weights and ``meta`` inside; when no
    epoch improved on ``best`` (a value carried over from an earlier phase), ``path`` is left
    as it is.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs, e.g. ``val_loss``, ``val_eer``, ``val_auc``.
    mode : {"min", "max"}
    best : float, optional
        The value to beat (default: none yet).
    """
    import keras

    store = Path(store or f"{path}.trainable.npz")
    sign = 1.0 if mode == "min" else -1.0

    class BestCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            # kept as sign * value, so that lower is better in either mode
            self.best = np.inf if best is None else sign * float(best)
            self.weights, self.info = None, {}
            if store.exists():  # a resumed run
                with np.load(store, allow_pickle=False) as z:
                    self.best = float(z["best"])
                    self.weights = [z[f"w{i}"] for i in range(len(model.trainable_weights))]
                    self.info = {"epoch": int(z["epoch"]), monitor: sign * self.best}

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is not None and sign * value < self.best:
                self.best = sign * float(value)
                self.weights = [w.numpy().copy() for w in model.trainable_weights]
                self.info = {"epoch": epoch + 1, monitor: float(value)}
                arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
                with preprocess.atomic_output(store, suffix=".npz") as tmp:
                    np.savez(tmp, best=self.best, epoch=epoch + 1, **arrays)

        @property
        def best_value(self):
            return sign * self.best

        def on_train_end(self, logs=None):
            if self.weights is None:
                return
            current = [w.numpy() for w in model.trainable_weights]
            for var, w in zip(model.trainable_weights, self.weights):
                var.assign(w)
            save_model_atomic(model, path, {**meta, **self.info, "monitor": monitor})
            for var, w in zip(model.trainable_weights, current):
                var.assign(w)
            store.unlink(missing_ok=True)

    return BestCheckpoint()


def make_validation_callback(predict_model, val_ds, targets):
    """Adds ``val_eer`` (pooled EER of the validation part, bonafide = target, `evaluate.
    compute_eer`) to the epoch logs, for history.csv, best-checkpoint selection and early
    stopping. Must come before the callbacks that read it."""
    import keras

    import evaluate

    y = np.asarray(targets).astype(int)

    class ValidationEER(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            p = predict_model.predict(val_ds, verbose=0).reshape(-1).astype(np.float64)
            # -P(spoof) orders utterances as the bonafide score does (EER is rank-based)
            if logs is not None:
                both = (y == 0).any() and (y == 1).any()
                logs["val_eer"] = (evaluate.compute_eer(-p[y == 0], -p[y == 1])[0] if both
                                   else float("nan"))

    return ValidationEER()


def versions():
    import keras
    import librosa
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "librosa": librosa.__version__,
            "scikit-learn": sklearn.__version__, "pandas": pd.__version__,
            "platform": platform.platform()}


def default_run_dir():
    return Path(RUNS_DIR) / time.strftime("%Y%m%d-%H%M%S")


def configure_cpu_devices(n):
    """Split the CPU into ``n`` logical devices (to exercise distribution strategies without
    accelerators). Must run before TensorFlow initializes its devices."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


MULTIWORKER_BLOCKED = (
    "--strategy multiworker is not available: Keras 3's Model.fit fails under "
    "tf.distribute.MultiWorkerMirroredStrategy ('Attempt to convert a value (PerReplica...)'; "
    "upstream keras-team/keras#20585, tensorflow/tensorflow#72388; reproduced here with "
    "TensorFlow {tf} / Keras {keras} and two workers on localhost). Use --strategy mirrored "
    "for several GPUs of one host.")


def get_strategy(name="none"):
    """A ``tf.distribute`` strategy by name.

    Parameters
    ----------
    name : {"none", "mirrored", "multiworker"}
        ``mirrored``: synchronous data parallelism over this host's GPUs (or its logical CPUs
        when there is no GPU, see `configure_cpu_devices`). The batch size is the global batch,
        split across replicas. ``multiworker`` (several hosts via ``TF_CONFIG``) raises
        ValueError: Keras 3's ``fit`` does not run under it (see `MULTIWORKER_BLOCKED`).
    """
    import keras
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if name == "multiworker":
        raise ValueError(MULTIWORKER_BLOCKED.format(tf=tf.__version__, keras=keras.__version__))
    raise ValueError(f"unknown strategy {name!r}; expected none, mirrored or multiworker")


def calibrate_run(run_dir, method=CALIBRATE, batch_size=32, val_features=None,
                  val_targets=None):
    """Choose the decision threshold of each saved model of a run on its validation part and
    write ``threshold.json`` (read by evaluate.py and predict.py as their default).

    Parameters
    ----------
    run_dir : str or Path
    method : str
        See `evaluate.calibrate_threshold`.
    val_features : np.ndarray, shape (n_val, 1280), optional
        Cached backbone features of the validation part, valid for both models (frozen
        backbone): the head is applied to them instead of a full pass over the spectrograms.
    val_targets : array of {0, 1}, shape (n_val,)
        Targets of ``val_features`` (1 = spoof), required with it.

    Returns
    -------
    saved : dict
        ``{"best": calibration, "final": calibration}`` (as written), each with the metrics on
        the validation part at 0.5 and at the calibrated threshold (positive class = spoof).
    """
    import evaluate

    run_dir = Path(run_dir)
    saved = {}
    for which, name in (("best", "best.keras"), ("final", "model.keras")):
        if not (run_dir / name).exists():
            continue
        if val_features is not None:
            model, _, _ = evaluate.load_run(run_dir, which)
            _, kernel, bias = evaluate.logit_parts(model)  # the last layer, before the sigmoid
            h = np.asarray(model.get_layer("dense")(np.asarray(val_features)), np.float64)
            score = -(h @ kernel + bias).reshape(-1)
            y = np.asarray(val_targets).astype(int)
        else:
            table, _ = evaluate.scores_from_model(run_dir, None, which, batch_size)
            score, y = table["score"].to_numpy(), (table["key"] == "spoof").to_numpy(int)
        cal = evaluate.calibrate_threshold(y, score, method)
        p = evaluate.sigmoid(-score)
        cal["validation"] = {
            "at_0.5": evaluate.binary_metrics(y, p, 0.5),
            "calibrated": evaluate.classification_metrics(y, score < cal["score_threshold"])}
        cal["model"] = name
        saved[which] = cal
    preprocess.write_text_atomic(run_dir / "threshold.json",
                                 json.dumps(evaluate.json_safe(saved), indent=2) + "\n")
    return saved


def train(data, run_dir, val_data=None, val_fraction=data_loader.VAL_FRACTION,
          seed=data_loader.SEED, weights=WEIGHTS, epochs=EPOCHS, batch_size=BATCH_SIZE,
          learning_rate=LEARNING_RATE, dense_units=DENSE_UNITS, dropout=DROPOUT,
          overwrite=False, verbose=2, argv=None, callbacks=(), feature_cache=True,
          cache_dir=None, strategy="none", class_weight=CLASS_WEIGHT, balanced_batches=False,
          augment=None, calibrate=CALIBRATE, monitor=MONITOR, early_stopping=0,
          fine_tune_blocks=0, fine_tune_epochs=FINE_TUNE_EPOCHS, fine_tune_lr=FINE_TUNE_LR,
          split_seed=None):
    """Train one run and write its folder (see module docstring).

    Parameters
    ----------
    feature_cache : bool
        With a frozen backbone and no augmentation, compute its pooled features once
        (`cached_features`) and train the head on them; the saved model is the full end-to-end
        model either way.
    cache_dir : str or Path, optional
        Where the features are cached; default ``<data folder>/backbone_cache``.
    strategy : {"none", "mirrored", "multiworker"}
        See `get_strategy`.
    class_weight : str or tuple
        Loss weight per class: ``"none"``, ``"balanced"`` or ``(w_bona, w_spoof)``
        (`data_loader.class_weights`).
    balanced_batches : bool
        Every training batch half bonafide, half spoof (`data_loader.balanced_indices`).
    augment : dict, optional
        Training-part augmentation (`data_loader.augmentation`); validation and evaluation
        never see it.
    calibrate : str
        Decision threshold chosen on the validation part after training
        (`evaluate.calibrate_threshold`: ``eer``, ``f1``, ``far:RATE``) and written to
        ``threshold.json``; ``none`` to skip.
    monitor : {"loss", "eer", "auc"}
        Validation metric that selects ``best.keras`` (and drives early stopping).
    early_stopping : int
        Stop a phase after this many epochs without improvement of ``monitor`` (0 = off).
    fine_tune_blocks : int
        After the frozen phase, unfreeze the top N MBConv blocks (`unfreeze_top_blocks`,
        BatchNorm stays frozen) and train ``fine_tune_epochs`` more epochs at ``fine_tune_lr``
        on spectrograms (no feature cache). 0 = off.
    split_seed : int, optional
        Seed of the 80/20 split, default ``seed`` (``--seeds`` keeps one split for all seeds).
    callbacks : sequence
        Extra Keras callbacks, run after the project's own (backup, CSV log, best checkpoint,
        validation EER).

    Returns
    -------
    run_dir : Path
    history : pandas.DataFrame
        One row per epoch (as in ``history.csv``).
    """
    import keras
    import tensorflow as tf

    run_dir = Path(run_dir)
    split_seed = seed if split_seed is None else split_seed
    finished = (run_dir / "model.keras").exists()
    if finished and not overwrite:
        raise FileExistsError(f"{run_dir} already holds a finished run; choose another --run "
                              "or pass --overwrite")
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, got {monitor!r}")
    if calibrate != "none":
        import evaluate

        calibrate = evaluate.parse_calibration(calibrate)
    if fine_tune_blocks and (fine_tune_epochs < 1 or not fine_tune_lr > 0):
        raise ValueError("fine-tuning needs --fine-tune-epochs >= 1 and --fine-tune-lr > 0")
    if fine_tune_blocks and strategy != "none":
        raise ValueError("--fine-tune-blocks is not supported with --strategy yet")

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    # everything that can fail on bad input (data, weights) happens before the run folder is
    # touched, so a failed start never leaves a half-made run or deletes a finished one
    train_df, val_df, features = data_loader.load_splits(data, val_data, val_fraction,
                                                         split_seed)
    weights_per_class = data_loader.class_weights(train_df["target"], class_weight)
    dist = get_strategy(strategy)
    with dist.scope():
        model = build_model(weights, INPUT_SHAPE, dense_units, dropout, learning_rate)
    use_cache = feature_cache and not augment and not backbone_of(model).trainable
    replicas = dist.num_replicas_in_sync
    if replicas > 1:
        # Keras 3 fails on a batch that splits unevenly across replicas: with a batch size
        # that is a multiple of the replicas, trimming each part to a multiple of them makes
        # every batch, the last included, split evenly (at most replicas - 1 utterances unused)
        if batch_size % replicas:
            raise ValueError(f"--batch-size {batch_size} must be a multiple of the {replicas} "
                             "replicas")
        train_df = train_df.iloc[:len(train_df) - len(train_df) % replicas]
        val_df = val_df.iloc[:len(val_df) - len(val_df) % replicas]

    def spectrogram_datasets():
        tr = data_loader.make_dataset(train_df, batch_size, shuffle=True, seed=seed,
                                      shape=features["shape"], balanced=balanced_batches,
                                      augment=augment, params=features)
        return tr, data_loader.make_dataset(val_df, batch_size, shape=features["shape"])

    val_features = None
    if use_cache:
        parts = []
        for df, folder in ((train_df, data), (val_df, val_data or data)):
            manifest = data_loader.load_manifest(folder)
            rows, array = cached_features(model, folder, manifest, features,
                                          cache_dir and Path(cache_dir) / Path(folder).name,
                                          progress=verbose > 0, distributed=replicas > 1)
            parts.append((array, rows.loc[df["utt_id"], "row"].to_numpy()))
        with dist.scope():
            # several steps per call fail in Keras 3 under MirroredStrategy: one per call there
            fit_model = head_model(model, learning_rate, 1 if replicas > 1 else 32)
        train_ds = feature_dataset(*parts[0], train_df["target"], batch_size, shuffle=True,
                                   seed=seed, balanced=balanced_batches)
        val_ds = feature_dataset(*parts[1], val_df["target"], batch_size)
        if not fine_tune_blocks:
            val_features = np.asarray(parts[1][0][parts[1][1]])
    else:
        fit_model = model
        train_ds, val_ds = spectrogram_datasets()

    if finished:
        shutil.rmtree(run_dir)
    backup = run_dir / "backup"
    phase1_done = run_dir / "phase1.json"  # fine-tuning runs: the frozen phase is finished
    resuming = backup.exists() or phase1_done.exists() or (run_dir / "backup_ft").exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    split = pd.concat([train_df.assign(part="train"), val_df.assign(part="val")])
    split[["utt_id", "part", "label", "attack", "path"]].to_csv(run_dir / "split.csv",
                                                               index=False)
    config = {
        "args": {"data": str(Path(data).resolve()),
                 "val_data": str(Path(val_data).resolve()) if val_data else None,
                 "val_fraction": None if val_data else val_fraction, "seed": seed,
                 "split_seed": None if val_data else split_seed,
                 "weights": str(weights), "epochs": epochs, "batch_size": batch_size,
                 "learning_rate": learning_rate, "dense_units": dense_units, "dropout": dropout,
                 "feature_cache": use_cache, "strategy": strategy,
                 "replicas": dist.num_replicas_in_sync,
                 "class_weight": class_weight if isinstance(class_weight, str)
                 else list(class_weight),
                 "balanced_batches": balanced_batches, "augment": augment,
                 "calibrate": calibrate, "monitor": monitor, "early_stopping": early_stopping,
                 "fine_tune_blocks": fine_tune_blocks,
                 "fine_tune_epochs": fine_tune_epochs if fine_tune_blocks else 0,
                 "fine_tune_lr": fine_tune_lr if fine_tune_blocks else None},
        "class_weights": {"bonafide": weights_per_class[0], "spoof": weights_per_class[1]}
        if weights_per_class else None,
        "command": " ".join(argv) if argv is not None else None,
        "features": features,
        "labels": {"target": "1 = spoof, 0 = bonafide", "output": "P(spoof)",
                   "score": "log-odds of bonafide (higher = more bonafide, ASVspoof convention)"},
        "input": {"shape": list(INPUT_SHAPE), "range": [0, 255],
                  "transform": "data_loader.to_model_input: x * 255, repeated to 3 channels"},
        "counts": {part: d["label"].value_counts().to_dict()
                   for part, d in (("train", train_df), ("val", val_df))},
        "params": {"trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                   "non_trainable": int(sum(np.prod(w.shape)
                                            for w in model.non_trainable_weights))},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta = {k: config[k] for k in ("features", "labels", "input")}
    meta["run"] = run_dir.name
    key, mode = MONITORS[monitor]
    if resuming:
        print(f"resuming {run_dir} from its last finished epoch", file=sys.stderr)

    def phase_callbacks(backup_dir, checkpoint, predict_model, val):
        cbs = [keras.callbacks.BackupAndRestore(str(backup_dir)),
               make_validation_callback(predict_model, val, val_df["target"]),
               keras.callbacks.CSVLogger(str(run_dir / "history.csv"),
                                         append=(run_dir / "history.csv").exists()),
               checkpoint]
        if early_stopping:
            cbs.append(keras.callbacks.EarlyStopping(key, patience=early_stopping, mode=mode))
        return [*cbs, *callbacks]

    # phase 1: the design card's frozen backbone (on cached features when possible)
    if phase1_done.exists():
        model.load_weights(run_dir / "phase1.weights.h5")
        done = json.loads(phase1_done.read_text())
        best_so_far, epochs_run = done["best"], done["epochs"]
    else:
        (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        checkpoint = make_checkpoint_callback(run_dir / "best.keras", meta, model, key, mode)
        fit_model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                      callbacks=phase_callbacks(backup, checkpoint, fit_model, val_ds),
                      class_weight=weights_per_class, verbose=verbose,
                      shuffle=False)  # train_ds reshuffles itself every epoch
        best_so_far, epochs_run = checkpoint.best_value, len(pd.read_csv(run_dir / "history.csv"))
        if fine_tune_blocks:
            with preprocess.atomic_output(run_dir / "phase1.weights.h5",
                                          suffix=".weights.h5") as tmp:
                model.save_weights(tmp)
            preprocess.write_text_atomic(phase1_done, json.dumps(
                {"best": best_so_far, "epochs": epochs_run}) + "\n")

    # phase 2 (optional): unfreeze the top blocks, lower learning rate, spectrogram input
    if fine_tune_blocks:
        blocks = unfreeze_top_blocks(model, fine_tune_blocks)
        compile_model(model, fine_tune_lr)
        config["fine_tune"] = {"blocks": blocks, "phase1_epochs": epochs_run, "trainable": int(
            sum(np.prod(w.shape) for w in model.trainable_weights))}
        (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        train_ds, val_ds = spectrogram_datasets()
        checkpoint = make_checkpoint_callback(run_dir / "best.keras", meta, model, key, mode,
                                              best=best_so_far,
                                              store=run_dir / "best.keras.finetune.npz")
        model.fit(train_ds, validation_data=val_ds, initial_epoch=epochs_run,
                  epochs=epochs_run + fine_tune_epochs,
                  callbacks=phase_callbacks(run_dir / "backup_ft", checkpoint, model, val_ds),
                  class_weight=weights_per_class, verbose=verbose, shuffle=False)
    history = pd.read_csv(run_dir / "history.csv")
    save_model_atomic(model, run_dir / "model.keras", {**meta, "epoch": len(history)})
    for leftover in ("phase1.json", "phase1.weights.h5"):
        (run_dir / leftover).unlink(missing_ok=True)
    if calibrate != "none":
        try:
            calibrate_run(run_dir, calibrate, val_features=val_features,
                          val_targets=val_df["target"])
        except ValueError as e:  # e.g. a validation part with one class: the run is still good
            print(f"warning: no threshold calibrated ({e}); evaluate.py and predict.py will "
                  "use 0.5", file=sys.stderr)
    return run_dir, history


def parse_seeds(spec):
    """``"1,2,3"`` -> [1, 2, 3] (distinct integers)."""
    try:
        seeds = [int(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {spec!r}: expected distinct integers, e.g. 1,2,3")
    return seeds


def seed_summary(run_dirs, test_data=None, batch_size=32):
    """Mean and spread over runs that differ only in their seed.

    For each run: its validation EER, and F1 (positive class spoof) at 0.5 and at the
    calibrated threshold on the validation part (optimistic: the threshold was chosen there);
    with ``test_data``, also EER and F1 on that preprocessed folder at the run's calibrated
    threshold (evaluate.py, output in ``<run>/eval/<test folder name>/``).

    Returns
    -------
    per_run : pandas.DataFrame
        One row per run.
    summary : pandas.DataFrame
        Rows mean, std (sample, ddof=1), min, max of every numeric column.
    """
    import evaluate

    rows = []
    for run in map(Path, run_dirs):
        config = json.loads((run / "config.json").read_text())
        row = {"run": str(run), "seed": config["args"]["seed"]}
        cal = evaluate.read_threshold(run, "best")
        if cal is not None:  # calibration scored the validation part already
            row.update({"val_eer": cal["eer"], "val_f1_0.5": cal["validation"]["at_0.5"]["f1"],
                        "val_f1_cal": cal["validation"]["calibrated"]["f1"]})
        else:
            table, _ = evaluate.scores_from_model(run, None, "best", batch_size)
            y = (table["key"] == "spoof").to_numpy(int)
            score = table["score"].to_numpy()
            row.update({"val_eer": evaluate.compute_eer(score[y == 0], score[y == 1])[0],
                        "val_f1_0.5": evaluate.binary_metrics(y, table["p_spoof"], 0.5)["f1"]})
        if test_data is not None:
            m = evaluate.evaluate(run, test_data, batch_size=batch_size, plots=False)
            row.update({"test_eer": m["eer"], "test_f1": m["operating_points"]["chosen"]["f1"],
                        "test_recall": m["operating_points"]["chosen"]["recall"]})
        rows.append(row)
    per_run = pd.DataFrame(rows)
    numeric = per_run.drop(columns=["run", "seed"])
    summary = numeric.agg(["mean", "std", "min", "max"])
    return per_run, summary


def build_parser():
    """The command line of train.py (also used by scripts/compare_recipes.py to read recipes)."""
    ap = argparse.ArgumentParser(
        description="Train EfficientNetB0 (frozen) -> GAP -> Dense(128, relu) -> Dropout -> "
                    "Dense(1, sigmoid) = P(spoof) on preprocessed mel arrays. Label 1 = spoof.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="data/features/train",
                    help="preprocessed training folder (from preprocess.py)")
    ap.add_argument("--val-data", help="validate on this preprocessed folder (e.g. the official "
                                       "dev partition) instead of an 80/20 split of --data")
    ap.add_argument("--val-fraction", type=float, default=data_loader.VAL_FRACTION,
                    help="share of --data held out for validation (stratified), without "
                         "--val-data")
    ap.add_argument("--run", help="run folder to write (default: runs/<date-time>); an "
                                  "unfinished run there is resumed")
    ap.add_argument("--overwrite", action="store_true", help="replace a finished run in --run")
    ap.add_argument("--weights", default=WEIGHTS,
                    help="backbone weights: 'imagenet' (downloaded by Keras), 'none' (random "
                         "init), or the path of a local EfficientNetB0 no-top weights file")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="batch size")
    ap.add_argument("--lr", type=float, default=LEARNING_RATE, help="Adam learning rate")
    ap.add_argument("--dense-units", type=int, default=DENSE_UNITS,
                    help="units of the hidden Dense layer")
    ap.add_argument("--dropout", type=float, default=DROPOUT, help="dropout rate before the "
                                                                   "output layer")
    ap.add_argument("--seed", type=int, default=data_loader.SEED,
                    help="seed for the split, shuffling and initialization (repeatable runs)")
    ap.add_argument("--seeds", help="train the same recipe once per seed (e.g. 1,2,3) into "
                                    "<run>/seed<N>/ and report mean and spread of EER and F1 "
                                    "(the split stays that of --seed)")
    ap.add_argument("--test-data", help="with --seeds: also evaluate every seed's run on this "
                                        "preprocessed folder at its calibrated threshold")

    g = ap.add_argument_group("class imbalance and decision threshold")
    g.add_argument("--class-weight", default=CLASS_WEIGHT,
                   help="loss weight per class: 'none', 'balanced' (n / (2 n_class)) or "
                        "W_BONA,W_SPOOF, e.g. 0.9,0.1")
    g.add_argument("--balanced-batches", action="store_true",
                   help="draw every training batch half bonafide, half spoof (oversampling "
                        "the minority class)")
    g.add_argument("--calibrate", default=CALIBRATE,
                   help="after training, choose the decision threshold on the validation data "
                        "and save it (threshold.json; evaluate.py and predict.py use it by "
                        "default): 'eer' (EER point), 'f1' (best F1, spoof positive), "
                        "'far:RATE' (most spoofs caught with at most RATE of bonafide flagged) "
                        "or 'none' (keep 0.5)")
    g.add_argument("--monitor", choices=tuple(MONITORS), default=MONITOR,
                   help="validation metric that selects best.keras and drives early stopping "
                        "(val_eer is computed every epoch and logged in history.csv)")
    g.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop a phase after PATIENCE epochs without improvement of --monitor "
                        "(0 = off)")

    g = ap.add_argument_group("fine-tuning (second phase, after the frozen epochs)")
    g.add_argument("--fine-tune-blocks", type=int, default=0, metavar="N",
                   help="unfreeze the last N of EfficientNetB0's 16 MBConv blocks (and its top "
                        "1x1 conv; BatchNorm stays frozen) after --epochs frozen epochs; 0 = off")
    g.add_argument("--fine-tune-epochs", type=int, default=FINE_TUNE_EPOCHS,
                   help="epochs of the fine-tuning phase")
    g.add_argument("--fine-tune-lr", type=float, default=FINE_TUNE_LR,
                   help="Adam learning rate of the fine-tuning phase")

    g = ap.add_argument_group("augmentation (training part only; all off by default)")
    g.add_argument("--freq-mask", type=int, default=0, metavar="F",
                   help="SpecAugment: frequency masks of up to F mel bins")
    g.add_argument("--time-mask", type=int, default=0, metavar="T",
                   help="SpecAugment: time masks of up to T frames")
    g.add_argument("--masks", type=int, default=1, help="SpecAugment masks of each kind")
    g.add_argument("--random-crop", action="store_true",
                   help="take the ~4 s window at a random position of longer utterances "
                        "(evaluation always takes the start)")
    g.add_argument("--gain-db", type=float, default=0.0, metavar="G",
                   help="random gain in [-G, +G] dB, clipped to [-1, 1] (features are "
                        "max-normalized: gain matters through clipping and noise level)")
    g.add_argument("--noise-snr", metavar="LOW,HIGH",
                   help="add white noise at an SNR drawn from LOW..HIGH dB, e.g. 10,40")
    g.add_argument("--lowpass", metavar="LOW,HIGH",
                   help="codec-like low-pass with a cutoff drawn from LOW..HIGH Hz, e.g. "
                        "3400,7000")
    g.add_argument("--augment-p", type=float, default=data_loader.AUGMENT_OFF["p"],
                   help="probability that each waveform perturbation (gain, noise, low-pass) "
                        "is applied to an example")

    g = ap.add_argument_group("speed and scale")
    g.add_argument("--no-feature-cache", action="store_true",
                   help="run the frozen backbone in every epoch instead of computing its "
                        "features once (same result, slower; for checking)")
    g.add_argument("--cache-dir", help="where backbone features are cached (default: "
                                       "<data folder>/backbone_cache)")
    g.add_argument("--strategy", choices=("none", "mirrored", "multiworker"), default="none",
                   help="tf.distribute strategy: 'mirrored' = all GPUs of this host (the batch "
                        "size is global); 'multiworker' (hosts in TF_CONFIG) stops with an "
                        "explanation: Keras 3's fit does not support it yet")
    g.add_argument("--cpu-devices", type=int, default=0,
                   help="split the CPU into N logical devices (to try --strategy mirrored "
                        "without GPUs)")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch progress output")
    return ap


def train_kwargs(args):
    """`train` keyword arguments from parsed command-line ``args`` (checked; ValueError with
    the flag's problem otherwise)."""
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be positive")
    if args.early_stopping < 0 or args.fine_tune_blocks < 0:
        raise ValueError("--early-stopping and --fine-tune-blocks must be >= 0")
    augment = data_loader.augmentation(
        args.freq_mask, args.time_mask, args.masks, args.random_crop, args.gain_db,
        args.noise_snr, args.lowpass, args.augment_p)
    return dict(
        val_data=args.val_data, val_fraction=args.val_fraction, seed=args.seed,
        weights=args.weights, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, dense_units=args.dense_units, dropout=args.dropout,
        overwrite=args.overwrite, verbose=0 if args.quiet else 2,
        feature_cache=not args.no_feature_cache, cache_dir=args.cache_dir,
        strategy=args.strategy, class_weight=data_loader.parse_class_weight(args.class_weight),
        balanced_batches=args.balanced_batches, augment=augment, calibrate=args.calibrate,
        monitor=args.monitor, early_stopping=args.early_stopping,
        fine_tune_blocks=args.fine_tune_blocks, fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_lr=args.fine_tune_lr)


def report_run(run_dir, history):
    """A short summary of a finished run (best epoch, calibrated threshold)."""
    import evaluate

    config = json.loads((Path(run_dir) / "config.json").read_text())
    key, mode = MONITORS[config["args"]["monitor"]]
    best = history.loc[history[key].idxmin() if mode == "min" else history[key].idxmax()]
    lines = [f"run: {run_dir} ({len(history)} epochs)",
             f"best {key} at epoch {int(best['epoch']) + 1} (best.keras): val_loss "
             f"{best['val_loss']:.4f}, val_accuracy {best['val_accuracy']:.4f}, val_auc "
             f"{best['val_auc']:.4f} (positive class = spoof), val_eer {best['val_eer']:.2%}"]
    cal = evaluate.read_threshold(run_dir, "best")
    if cal is not None:
        v = cal["validation"]
        lines.append(f"calibrated threshold ({cal['method']}, validation): P(spoof) >= "
                     f"{cal['threshold']:.4g}; F1 {v['calibrated']['f1']:.3f} "
                     f"(recall {v['calibrated']['recall']:.3f}) vs F1 {v['at_0.5']['f1']:.3f} "
                     f"(recall {v['at_0.5']['recall']:.3f}) at 0.5")
    return "\n".join(lines)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    command = sys.argv[:1] + list(argv if argv is not None else sys.argv[1:])
    run_dir = Path(args.run) if args.run else default_run_dir()
    if args.cpu_devices > 1:
        configure_cpu_devices(args.cpu_devices)
    try:
        kwargs = train_kwargs(args)
        if args.test_data and not args.seeds:
            raise ValueError("--test-data goes with --seeds (evaluate a single run with "
                             "evaluate.py --data)")
        if not args.seeds:
            run_dir, history = train(args.data, run_dir, argv=command, **kwargs)
            print("\n" + report_run(run_dir, history))
            print(f"next: python evaluate.py --run {run_dir}")
            return run_dir
        runs = []
        for seed in parse_seeds(args.seeds):
            run = run_dir / f"seed{seed}"
            if (run / "model.keras").exists() and not args.overwrite:
                print(f"{run}: finished earlier, kept", file=sys.stderr)
            else:
                # the seed changes initialization and batch order; the split stays --seed's
                train(args.data, run, argv=command, **{**kwargs, "seed": seed},
                      split_seed=args.seed)
            runs.append(run)
        per_run, summary = seed_summary(runs, args.test_data)
        per_run.to_csv(run_dir / "seeds.csv", index=False)
        summary.to_csv(run_dir / "seeds_summary.csv")
    except (WeightsUnavailable, FileNotFoundError, FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"\n{len(runs)} seeds ({args.seeds}) of one recipe; EER bonafide = target, F1 "
          "positive class = spoof; val_f1_cal is optimistic (threshold chosen on the same data)")
    print(per_run.drop(columns=["run"]).to_string(index=False, float_format="%.4f"))
    print(summary.to_string(float_format="%.4f"))
    print(f"written: {run_dir / 'seeds.csv'}, {run_dir / 'seeds_summary.csv'}")
    return run_dir


if __name__ == "__main__":
    main()
