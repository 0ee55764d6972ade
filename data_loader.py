"""tf.data pipelines over a preprocessed folder (manifest.csv + features.json + .npy arrays).

Label convention, everywhere in this project: target 1 = spoof, 0 = bonafide; the model outputs
P(spoof). Scores that leave the program follow ASVspoof (higher = more bonafide).

Two ways to get training and validation data:
- a stratified 80/20 split of one folder (``--val-fraction``, ``--seed``), or
- the official partitions: train on one folder, validate on another (``train.py --val-data``).

Arrays are streamed from disk, so a corpus larger than memory works.

Example::

    python data_loader.py data/features/train          # split sizes per label and attack
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

VAL_FRACTION = 0.2
SEED = 42
BATCH_SIZE = 16
SHUFFLE_BUFFER = 2048
MANIFEST_COLUMNS = ("utt_id", "path", "label", "target", "attack", "speaker", "split")


def load_features_json(data_dir):
    """The feature parameters saved beside the arrays of ``data_dir`` (see preprocess.py)."""
    fj = Path(data_dir) / "features.json"
    if not fj.is_file():
        raise FileNotFoundError(f"{fj} not found: is {data_dir} a folder written by preprocess.py?")
    return json.loads(fj.read_text())


def load_manifest(data_dir):
    """Read ``manifest.csv`` of a preprocessed folder, with array paths made absolute.

    Returns
    -------
    df : pandas.DataFrame
        Columns ``utt_id, path, label, target, attack, speaker, split``; ``target`` is 1 for spoof.
    """
    data_dir = Path(data_dir)
    mf = data_dir / "manifest.csv"
    if not mf.is_file():
        raise FileNotFoundError(f"{mf} not found: run preprocess.py with --out {data_dir} first")
    df = pd.read_csv(mf, dtype={"utt_id": str, "attack": str, "speaker": str, "split": str},
                     keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{mf}: missing columns {missing}")
    if df.empty:
        raise ValueError(f"{mf}: no utterances (did every file fail? see errors.csv)")
    bad = df[(df["target"] != (df["label"] == "spoof").astype(int))]
    if len(bad):
        raise ValueError(f"{mf}: target disagrees with label for {bad['utt_id'].iloc[0]!r}")
    df["path"] = [str(data_dir / p) for p in df["path"]]
    return df


def stratified_split(df, val_fraction=VAL_FRACTION, seed=SEED):
    """Split a manifest into train/validation parts, stratified by label.

    Parameters
    ----------
    df : pandas.DataFrame
        A manifest (see `load_manifest`).
    val_fraction : float in (0, 1)
    seed : int
        The same seed always gives the same split.

    Returns
    -------
    train_df, val_df : pandas.DataFrame
        Disjoint; each label's share of ``val_df`` is ``val_fraction`` (rounded).
    """
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    counts = df["label"].value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise ValueError(f"a stratified split needs at least 2 utterances of each label, "
                         f"got {counts.to_dict()}")
    train_df, val_df = train_test_split(df, test_size=val_fraction, random_state=seed,
                                        stratify=df["label"])
    return train_df.reset_index(drop=True), val_df.reset_index(drop=True)


def to_model_input(x):
    """Map normalized mel arrays to the input EfficientNetB0 expects.

    Keras' EfficientNet rescales internally and expects 0-255 pixel values: a [0, 1] input would
    silently cripple the pretrained features. The single channel is repeated to three.

    Parameters
    ----------
    x : tensor or array, shape (..., 128, 128), values in [0, 1]

    Returns
    -------
    image : tf.Tensor, shape (..., 128, 128, 3), float32, values in [0, 255]
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(x, dtype=tf.float32) * 255.0
    return tf.repeat(x[..., tf.newaxis], 3, axis=-1)


def _load_npy(path, shape):
    def read(p):
        a = np.load(p.decode(), allow_pickle=False)
        if a.shape != shape:
            raise ValueError(f"{p.decode()}: array shape {a.shape}, expected {shape}")
        return a.astype(np.float32, copy=False)

    import tensorflow as tf

    x = tf.numpy_function(read, [path], tf.float32, stateful=False)
    x.set_shape(shape)
    return x


def make_dataset(df, batch_size=BATCH_SIZE, shuffle=False, seed=SEED, shape=(128, 128),
                 with_labels=True):
    """A batched, prefetched ``tf.data.Dataset`` streaming the arrays listed in ``df``.

    Parameters
    ----------
    df : pandas.DataFrame
        Manifest rows (absolute ``path``; ``target`` when ``with_labels``).
    batch_size : int
    shuffle : bool
        Reshuffle every epoch (seeded); off for evaluation so order matches ``df``.
    seed : int
    shape : tuple of int
        Shape of each stored array, ``features.json["shape"]``.
    with_labels : bool
        Yield ``(image, target)`` pairs, else images alone.

    Returns
    -------
    ds : tf.data.Dataset
        Elements ``(images (batch, 128, 128, 3) float32 in [0, 255], targets (batch,) float32)``.
    """
    import tensorflow as tf

    shape = tuple(shape)
    paths = tf.constant(df["path"].to_numpy(dtype=str))
    if with_labels:
        ds = tf.data.Dataset.from_tensor_slices((paths, df["target"].to_numpy(np.float32)))
    else:
        ds = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        ds = ds.shuffle(min(len(df), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    if with_labels:
        ds = ds.map(lambda p, y: (to_model_input(_load_npy(p, shape)), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda p: to_model_input(_load_npy(p, shape)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_splits(data_dir, val_data=None, val_fraction=VAL_FRACTION, seed=SEED):
    """Training and validation manifests: an 80/20 split of ``data_dir``, or all of ``data_dir``
    against all of ``val_data`` (official partitions).

    Returns
    -------
    train_df, val_df : pandas.DataFrame
    features : dict
        The feature parameters (identical in both folders, else ValueError).
    """
    features = load_features_json(data_dir)
    df = load_manifest(data_dir)
    if val_data is None:
        train_df, val_df = stratified_split(df, val_fraction, seed)
    else:
        other = load_features_json(val_data)
        if other != features:
            diff = sorted(k for k in set(other) | set(features) if other.get(k) != features.get(k))
            raise ValueError(f"{data_dir} and {val_data} were preprocessed with different feature "
                             f"parameters (differ in: {', '.join(diff)})")
        train_df, val_df = df, load_manifest(val_data)
    return train_df, val_df, features


def describe(train_df, val_df):
    """A table of utterance counts per label and attack for the two parts.

    Returns
    -------
    table : pandas.DataFrame
        Index ``(label, attack)`` plus a ``total`` row; columns ``train, val``.
    """
    parts = {"train": train_df, "val": val_df}
    rows = {name: d.groupby(["label", "attack"]).size() for name, d in parts.items()}
    table = pd.DataFrame(rows).fillna(0).astype(int)
    for name, d in parts.items():
        table.loc[("total", ""), name] = len(d)
    return table.astype(int)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Print the train/validation split of a preprocessed folder, per label and "
                    "attack (label 1 = spoof).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("data", nargs="?", default="data/features/train",
                    help="preprocessed folder (manifest.csv, features.json, arrays)")
    ap.add_argument("--val-data", help="validate on this preprocessed folder instead of "
                                       "splitting DATA (official partitions)")
    ap.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                    help="share of DATA held out for validation, stratified by label")
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the split")
    args = ap.parse_args(argv)
    try:
        train_df, val_df, features = load_splits(args.data, args.val_data, args.val_fraction,
                                                 args.seed)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    how = (f"official partitions: train={args.data}, val={args.val_data}" if args.val_data else
           f"stratified split of {args.data}: val_fraction={args.val_fraction}, seed={args.seed}")
    print(how)
    print(f"features: {features['shape']} arrays, {features['sample_rate']} Hz, "
          f"fit={features['fit']}")
    print(describe(train_df, val_df).to_string())
    return train_df, val_df


if __name__ == "__main__":
    main()
