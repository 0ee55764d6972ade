"""Train the design-card detector on preprocessed mel-spectrograms.

Model: EfficientNetB0 (ImageNet, include_top=False, frozen) -> GlobalAveragePooling2D ->
Dense(128, relu) -> Dropout(0.5) -> Dense(1, sigmoid) = P(spoof). Adam(1e-4), binary
cross-entropy, 10 epochs, batch 16. Label 1 = spoof.

Each run writes ``runs/<name>/``:

- ``model.keras``   the model after the last epoch,
- ``best.keras``    the checkpoint with the lowest validation loss,
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


def feature_dataset(array, rows, targets, batch_size, shuffle=False, seed=data_loader.SEED):
    """tf.data over cached features, shuffled exactly as `data_loader.make_dataset` shuffles
    the same number of utterances with the same seed (same batches, same order)."""
    import tensorflow as tf

    x = np.asarray(array[np.asarray(rows)], dtype=np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(targets, dtype=np.float32)))
    if shuffle:
        ds = ds.shuffle(min(len(x), data_loader.SHUFFLE_BUFFER), seed=seed,
                        reshuffle_each_iteration=True)
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


def make_checkpoint_callback(path, meta, model, monitor="val_loss"):
    """Keep the model with the lowest ``monitor`` and write it to ``path`` when training ends.

    After each improving epoch the trainable weights are written (atomically, about 650 kB for
    the head) to ``<path>.trainable.npz`` instead of the whole 19 MB model, which made short
    epochs on cached features slow. A resumed run starts from that file. At the end of
    training, ``path`` gets the full model (``model``, the end-to-end model even when its head
    is trained on cached features) with the best weights and ``meta`` inside.
    """
    import keras

    store = Path(f"{path}.trainable.npz")

    class BestCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.weights, self.info = np.inf, None, {}
            if store.exists():  # a resumed run
                with np.load(store, allow_pickle=False) as z:
                    self.best = float(z["best"])
                    self.weights = [z[f"w{i}"] for i in range(len(model.trainable_weights))]
                    self.info = {"epoch": int(z["epoch"]), monitor: self.best}

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is not None and value < self.best:
                self.best = float(value)
                self.weights = [w.numpy().copy() for w in model.trainable_weights]
                self.info = {"epoch": epoch + 1, monitor: self.best}
                arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
                with preprocess.atomic_output(store, suffix=".npz") as tmp:
                    np.savez(tmp, best=self.best, epoch=epoch + 1, **arrays)

        def on_train_end(self, logs=None):
            if self.weights is None:
                return
            current = [w.numpy() for w in model.trainable_weights]
            for var, w in zip(model.trainable_weights, self.weights):
                var.assign(w)
            save_model_atomic(model, path, {**meta, **self.info})
            for var, w in zip(model.trainable_weights, current):
                var.assign(w)
            store.unlink(missing_ok=True)

    return BestCheckpoint()


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


def train(data, run_dir, val_data=None, val_fraction=data_loader.VAL_FRACTION,
          seed=data_loader.SEED, weights=WEIGHTS, epochs=EPOCHS, batch_size=BATCH_SIZE,
          learning_rate=LEARNING_RATE, dense_units=DENSE_UNITS, dropout=DROPOUT,
          overwrite=False, verbose=2, argv=None, callbacks=(), feature_cache=True,
          cache_dir=None, strategy="none"):
    """Train one run and write its folder (see module docstring).

    Parameters
    ----------
    feature_cache : bool
        With a frozen backbone, compute its pooled features once (`cached_features`) and train
        the head on them; the saved model is the full end-to-end model either way.
    cache_dir : str or Path, optional
        Where the features are cached; default ``<data folder>/backbone_cache``.
    strategy : {"none", "mirrored", "multiworker"}
        See `get_strategy`.
    callbacks : sequence
        Extra Keras callbacks, run after the project's own (backup, CSV log, best checkpoint).

    Returns
    -------
    run_dir : Path
    history : pandas.DataFrame
        One row per epoch (as in ``history.csv``).
    """
    import keras
    import tensorflow as tf

    run_dir = Path(run_dir)
    finished = (run_dir / "model.keras").exists()
    if finished and not overwrite:
        raise FileExistsError(f"{run_dir} already holds a finished run; choose another --run "
                              "or pass --overwrite")

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    # everything that can fail on bad input (data, weights) happens before the run folder is
    # touched, so a failed start never leaves a half-made run or deletes a finished one
    train_df, val_df, features = data_loader.load_splits(data, val_data, val_fraction, seed)
    dist = get_strategy(strategy)
    with dist.scope():
        model = build_model(weights, INPUT_SHAPE, dense_units, dropout, learning_rate)
    use_cache = feature_cache and not backbone_of(model).trainable
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
                                   seed=seed)
        val_ds = feature_dataset(*parts[1], val_df["target"], batch_size)
    else:
        fit_model = model
        train_ds = data_loader.make_dataset(train_df, batch_size, shuffle=True, seed=seed,
                                            shape=features["shape"])
        val_ds = data_loader.make_dataset(val_df, batch_size, shape=features["shape"])

    if finished:
        shutil.rmtree(run_dir)
    backup = run_dir / "backup"
    resuming = backup.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    split = pd.concat([train_df.assign(part="train"), val_df.assign(part="val")])
    split[["utt_id", "part", "label", "attack", "path"]].to_csv(run_dir / "split.csv",
                                                               index=False)
    config = {
        "args": {"data": str(Path(data).resolve()),
                 "val_data": str(Path(val_data).resolve()) if val_data else None,
                 "val_fraction": None if val_data else val_fraction, "seed": seed,
                 "weights": str(weights), "epochs": epochs, "batch_size": batch_size,
                 "learning_rate": learning_rate, "dense_units": dense_units, "dropout": dropout,
                 "feature_cache": use_cache, "strategy": strategy,
                 "replicas": dist.num_replicas_in_sync},
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
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    meta = {k: config[k] for k in ("features", "labels", "input")}
    meta["run"] = run_dir.name

    all_callbacks = [
        keras.callbacks.BackupAndRestore(str(backup)),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming),
        make_checkpoint_callback(run_dir / "best.keras", meta, model),
        *callbacks,
    ]
    if resuming:
        print(f"resuming {run_dir} from its last finished epoch", file=sys.stderr)
    fit_model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=all_callbacks,
                  verbose=verbose, shuffle=False)  # train_ds reshuffles itself every epoch
    save_model_atomic(model, run_dir / "model.keras", {**meta, "epoch": epochs})
    history = pd.read_csv(run_dir / "history.csv")
    return run_dir, history


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Train EfficientNetB0 (frozen) -> GAP -> Dense(128, relu) -> Dropout -> "
                    "Dense(1, sigmoid) = P(spoof) on preprocessed mel arrays.",
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
    ap.add_argument("--no-feature-cache", action="store_true",
                    help="run the frozen backbone in every epoch instead of computing its "
                         "features once (same result, slower; for checking)")
    ap.add_argument("--cache-dir", help="where backbone features are cached (default: "
                                        "<data folder>/backbone_cache)")
    ap.add_argument("--strategy", choices=("none", "mirrored", "multiworker"), default="none",
                    help="tf.distribute strategy: 'mirrored' = all GPUs of this host (the batch "
                         "size is global); 'multiworker' (hosts in TF_CONFIG) stops with an "
                         "explanation: Keras 3's fit does not support it yet")
    ap.add_argument("--cpu-devices", type=int, default=0,
                    help="split the CPU into N logical devices (to try --strategy mirrored "
                         "without GPUs)")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch progress output")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        ap.error("--epochs and --batch-size must be positive")
    run_dir = Path(args.run) if args.run else default_run_dir()
    if args.cpu_devices > 1:
        configure_cpu_devices(args.cpu_devices)
    try:
        run_dir, history = train(
            args.data, run_dir, val_data=args.val_data, val_fraction=args.val_fraction,
            seed=args.seed, weights=args.weights, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.lr, dense_units=args.dense_units, dropout=args.dropout,
            overwrite=args.overwrite, verbose=0 if args.quiet else 2,
            feature_cache=not args.no_feature_cache, cache_dir=args.cache_dir,
            strategy=args.strategy,
            argv=sys.argv[:1] + list(argv if argv is not None else sys.argv[1:]))
    except (WeightsUnavailable, FileNotFoundError, FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    best = history.loc[history["val_loss"].idxmin()]
    print(f"\nrun: {run_dir}\nbest epoch {int(best['epoch']) + 1}: val_loss {best['val_loss']:.4f}"
          f", val_accuracy {best['val_accuracy']:.4f}, val_auc {best['val_auc']:.4f} "
          f"(positive class = spoof)\nnext: python evaluate.py --run {run_dir}")
    return run_dir


if __name__ == "__main__":
    main()
