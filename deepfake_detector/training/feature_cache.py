"""The frozen-backbone feature cache of train.py.

With a frozen backbone, EfficientNetB0 + pooling maps a given input to the same 1280 numbers in
every epoch (the tiny Whisper encoder + pooling to the same 384). Computing them once and
training the head on them is the same training, minus
(epochs - 1) backbone passes. The head layers are shared with the full model, so the full model
is trained too and is what gets saved.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .. import datasets
from ..atomic import atomic_output, exclusive, sha256, write_text_atomic
from ..features import array_spec
from ..models import (PREDICT_BATCH_SIZE, backbone_key, batch_function, feature_extractor,
                      load_tensorflow)
from ..sampling import without_autotune


def cached_features(model, data_dir, manifest, features, cache_dir=None,
                    batch_size=PREDICT_BATCH_SIZE, progress=True, distributed=False,
                    kind="rgb255"):
    """Pooled backbone features of every utterance of a preprocessed folder, computed once.

    The features of the whole manifest are stored as ``<cache_dir>/<backbone>-<data>.npy``
    (float32, shape (n_utterances, features): 1280 for EfficientNetB0, 384 for Whisper tiny;
    manifest order) with the utterance ids beside it,
    written batch by batch to a memory-mapped file and renamed into place when complete. The
    name covers the backbone's weights (`model.backbone_key`) and the data (`data_key`:
    features.json, every array's size and time), so later runs with the same backbone and
    arrays (any seed, split or head) reuse them, and arrays computed again are never served
    from an old cache. ``<key>.json`` records the file's size, shape and sha256 when it is
    written; a cache whose file differs from its record (truncated, zeroed, replaced) is
    computed again with a warning, never trained on. One process writes a cache folder at a
    time (`atomic.exclusive`), and the leftovers of a killed one are removed.

    Parameters
    ----------
    model : keras.Model
        From `model.build_model` or `model.build_whisper`.
    data_dir : str or Path
    manifest : pandas.DataFrame
        `datasets.load_manifest` of ``data_dir``.
    features : dict
        Feature parameters of ``data_dir``.
    cache_dir : str or Path, optional
        Default ``<data_dir>/backbone_cache``.
    distributed : bool
        ``model`` was built under a multi-replica ``tf.distribute`` strategy.
    kind : {"rgb255", "waveform"}
        How the model takes the arrays (`datasets.to_model_input`).

    Returns
    -------
    table : pandas.DataFrame
        Indexed by utt_id; one column ``row`` into ``array``.
    array : np.ndarray (memory-mapped), shape (n_utterances, *features), float32: (n, 1280)
        for EfficientNetB0, (n, 29, 23, 64) for AASIST's encoder (24 channels in AASIST-L)
    """
    cache_dir = Path(cache_dir or Path(data_dir) / "backbone_cache")
    backbone = backbone_key(model)
    key = f"{backbone}-{data_key(data_dir, manifest)}"
    path, ids_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.ids"
    record_path = cache_dir / f"{key}.json"
    ids = list(manifest["utt_id"])
    with exclusive(cache_dir, "the backbone feature cache"):
        problem = verify_cache(path, ids_path, record_path, ids)
        if problem:
            if path.exists() or ids_path.exists():
                print(f"warning: {path}: {problem}; computing the features again",
                      file=sys.stderr)
            for stale in cache_dir.glob(f"{backbone}-*"):  # this backbone, other data: outdated
                stale.unlink()
            extractor = feature_extractor(model)
            if distributed:  # a local copy: mirrored variables called directly are per replica
                _, keras = load_tensorflow()

                local = keras.models.clone_model(extractor)
                local.set_weights(extractor.get_weights())
                extractor = local
            shape, dtype = array_spec(features)
            ds = datasets.make_dataset(manifest, batch_size, shape=shape, with_labels=False,
                                          kind=kind, dtype=dtype)
            with atomic_output(path, suffix=".npy") as tmp:
                _write_features(extractor, ds, tmp, len(ids), batch_size,
                                f"backbone features {Path(data_dir).name}", progress)
            write_text_atomic(ids_path, "\n".join(ids) + "\n")
            write_text_atomic(record_path, json.dumps(file_record(path), indent=1) + "\n")
    array = np.load(path, mmap_mode="r")
    return pd.DataFrame({"row": np.arange(len(ids))}, index=pd.Index(ids, name="utt_id")), array


def file_record(path):
    """What a cache file is: its size in bytes, its array's shape and dtype, its sha256."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
    return {"bytes": Path(path).stat().st_size, "shape": list(shape), "dtype": str(dtype),
            "sha256": sha256(path)}


def verify_cache(path, ids_path, record_path, ids):
    """Why a cache cannot be reused (None when it can): missing, for other utterances, or
    not the file that was written (size, shape or sha256 differ from ``<key>.json``:
    truncated, overwritten or corrupted since)."""
    if not (path.exists() and ids_path.exists() and record_path.exists()):
        return "incomplete (a file of the cache is missing)"
    if ids_path.read_text().split() != ids:
        return "cached for other utterances"
    try:
        want = json.loads(record_path.read_text())
        if Path(path).stat().st_size != want["bytes"]:
            return (f"{Path(path).stat().st_size} bytes, {want['bytes']} were written "
                    "(truncated or replaced)")
        have = file_record(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if have["shape"][:1] != [len(ids)]:
        return f"shape {have['shape']} for {len(ids)} utterances"
    if have != want:
        return "its content differs from what was written (sha256): corrupted or modified"
    return None


def part_features(model, df, features, cache_dir=None, progress=True, distributed=False,
                  kind="rgb255"):
    """The cached features (`cached_features`, one cache per source folder) of the utterances
    of ``df`` (a training or validation part, with its ``source`` column), in ``df``'s order:
    shape (len(df), *features), (len(df), 1280) for EfficientNetB0."""
    out = None
    for folder in df["source"].unique():
        sub = cache_dir and Path(cache_dir) / Path(folder).name
        rows, array = cached_features(model, folder, datasets.load_manifest(folder), features,
                                      sub, progress=progress, distributed=distributed, kind=kind)
        mask = (df["source"] == folder).to_numpy()
        if out is None:
            out = np.empty((len(df), *array.shape[1:]), np.float32)
        out[mask] = array[rows.loc[df.loc[mask, "utt_id"], "row"].to_numpy()]
    return out


def data_key(data_dir, manifest):
    """A fingerprint of what a cache of ``data_dir`` is made from: its ``features.json`` and, for
    every utterance of ``manifest``, its id and its array's size and modification time. Arrays
    computed again (``preprocess.py --overwrite``, other parameters) give another key."""
    import hashlib

    h = hashlib.sha1((Path(data_dir) / "features.json").read_bytes())
    for utt, path in zip(manifest["utt_id"], manifest["path"]):
        st = Path(path).stat()
        h.update(f"{utt}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _write_features(extractor, ds, path, n, batch_size, desc, progress):
    """Stream ``extractor`` over ``ds`` into a memory-mapped (n, features) float32 file."""
    from tqdm import tqdm

    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                    shape=(n, *extractor.output_shape[1:]))
    i = 0
    run = batch_function(extractor)  # compiled (eager calls peak at ~3 GB RSS), traced once
    for x in tqdm(ds, total=-(-n // batch_size), unit="batch", desc=desc, disable=not progress):
        f = run(x)
        out[i:i + len(f)] = f
        i += len(f)
    out.flush()
    del out


def feature_dataset(array, rows, targets, batch_size, shuffle=False, seed=datasets.SEED,
                    balanced=False, clock=None):
    """tf.data over cached features, in exactly the order `datasets.make_dataset` reads the
    same utterances with the same seed and epoch (same batches, same order;
    `datasets.epoch_batches`).
    """
    tf, _ = load_tensorflow()

    x = tf.constant(np.asarray(array[np.asarray(rows)], dtype=np.float32))
    y = tf.constant(np.asarray(targets, dtype=np.float32))
    ds = datasets.epoch_batches(np.asarray(targets), batch_size,
                                lambda i: (tf.gather(x, i), tf.gather(y, i)), shuffle, seed,
                                balanced, clock)
    return ds.prefetch(tf.data.AUTOTUNE)


def feature_batches(array, rows, batch_size):
    """Batches of the cached features ``array[rows]``, inputs only, in that order (precise
    BN's fixed selection of training utterances)."""
    tf, _ = load_tensorflow()

    x = np.asarray(array[np.asarray(rows)], dtype=np.float32)
    return without_autotune(tf.data.Dataset.from_tensor_slices(x).batch(batch_size))
