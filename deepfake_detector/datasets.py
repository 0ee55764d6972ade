"""tf.data pipelines over a preprocessed folder (manifest.csv + features.json + .npy arrays).

Label convention, everywhere in this project: target 1 = spoof, 0 = bonafide; the model outputs
P(spoof). Scores that leave the program follow ASVspoof (higher = more bonafide).

Two ways to get training and validation data:
- a stratified 80/20 split of one folder (``--val-fraction``, ``--seed``), or
- the official partitions: train on one folder, validate on another (``train.py --val-data``).

Arrays are streamed from disk, so a corpus larger than memory works.

For the training part only (never validation or evaluation) there are options a recipe may
turn on: balanced batches (`balanced_order`), loss weights per class (`class_weights`) and
augmentation (`augment.augment_example`: SpecAugment masks on the mel array; random crop, gain,
noise and low-pass on the waveform, read again from the source audio listed in the manifest).

The command line over it is the top-level ``data_loader.py``.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import features as F
from . import protocols
from .augment import augment_example, needs_audio
from .models.common import load_tensorflow
from .sampling import SEED, epoch_batches

VAL_FRACTION = 0.2
MANIFEST_COLUMNS = ("utt_id", "path", "label", "target", "attack", "speaker", "split")


def load_features_json(data_dir):
    """The feature parameters saved beside the arrays of ``data_dir`` (see preprocess.py)."""
    fj = Path(data_dir) / "features.json"
    if not fj.is_file():
        raise FileNotFoundError(f"{fj} not found: is {data_dir} a folder written by preprocess.py?")
    return json.loads(fj.read_text())


def load_corpus_info(data_dir):
    """``corpus.json`` of a preprocessed folder (`protocols.corpus_info`: what it was made
    from, and whether that is the synthetic demo corpus), or None for folders made before
    preprocess.py wrote it."""
    path = Path(data_dir) / "corpus.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def load_manifest(data_dir):
    """Read ``manifest.csv`` of a preprocessed folder, with array paths made absolute.

    Returns
    -------
    df : pandas.DataFrame
        Columns ``utt_id, path, label, target, attack, speaker, split``; ``target`` is 1 for spoof;
        the protocol's condition columns (codec, ...) when it had them.
    """
    data_dir = Path(data_dir)
    mf = data_dir / "manifest.csv"
    if not mf.is_file():
        raise FileNotFoundError(f"{mf} not found: run preprocess.py with --out {data_dir} first")
    text = {"utt_id": str, "attack": str, "speaker": str, "split": str,
            **{c: str for c in protocols.CONDITIONS}}  # codec "none", quality "1": text
    df = pd.read_csv(mf, dtype=text, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{mf}: missing columns {missing}")
    if df.empty:
        raise ValueError(f"{mf}: no utterances (did every file fail? see errors.csv)")
    bad = df[df["target"] != protocols.targets(df["label"])]
    if len(bad):
        raise ValueError(f"{mf}: target disagrees with label for {bad['utt_id'].iloc[0]!r}")
    dup = df["utt_id"][df["utt_id"].duplicated()]
    if len(dup):  # it would be counted twice in every metric
        raise ValueError(f"{mf}: utterance {dup.iloc[0][:60]!r} is listed more than once")
    df["path"] = [str(data_dir / p) for p in df["path"]]
    return df


def check_arrays(df, shape, dtype="<f4"):
    """Refuse, before any training or prediction starts, arrays that are missing, cut short or
    not this project's (`features.array_ok`), naming them: a bad array found later, inside a
    ``tf.data`` pipeline, would stop a run half-way.

    Parameters
    ----------
    df : pandas.DataFrame
        Manifest rows (absolute ``path``).
    shape, dtype :
        Of every array (`features.array_spec` of the folder's features.json).

    Raises
    ------
    ValueError
    """
    bad = [p for p in df["path"] if not F.array_ok(p, shape, dtype)]
    if bad:
        raise ValueError(f"{len(bad)} of {len(df)} arrays are missing, cut short or not "
                         f"{np.dtype(dtype).name} {tuple(shape)}, e.g. {bad[0]}; run "
                         "preprocess.py on that folder again (it computes them again)")


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


def parse_class_weight(spec):
    """Validate a ``--class-weight`` value.

    Parameters
    ----------
    spec : str
        ``"none"``, ``"balanced"`` or ``"W_BONA,W_SPOOF"`` (two positive numbers).

    Returns
    -------
    spec : str or tuple of float
        ``"none"``, ``"balanced"`` or ``(w_bona, w_spoof)``.
    """
    spec = str(spec).strip().lower()
    if spec in ("none", "balanced"):
        return spec
    try:
        w = tuple(float(v) for v in spec.split(","))
    except ValueError:
        w = ()
    if len(w) != 2 or not all(np.isfinite(v) and v > 0 for v in w):
        raise ValueError(f"class weight {spec!r}: expected 'none', 'balanced' or two positive "
                         "numbers W_BONA,W_SPOOF (e.g. 0.9,0.1)")
    return w


def class_weights(targets, spec="balanced"):
    """Loss weight of each class, for Keras' ``fit(class_weight=...)``.

    Parameters
    ----------
    targets : array of {0, 1}, shape (n,)
        Training targets (1 = spoof).
    spec : str or tuple
        ``"none"``; ``"balanced"``: ``n / (2 * n_class)``, so each class carries half of the
        total weight (sklearn's ``compute_class_weight("balanced")``; on ASVspoof 2019 LA train,
        2,580 bonafide and 22,800 spoof, about 4.92 and 0.56); or explicit
        ``(w_bona, w_spoof)``.

    Returns
    -------
    weights : dict {0: w_bona, 1: w_spoof} or None
    """
    from sklearn.utils.class_weight import compute_class_weight

    spec = parse_class_weight(spec) if isinstance(spec, str) else tuple(spec)
    if spec == "none":
        return None
    if spec == "balanced":
        t = np.asarray(targets).astype(int)
        counts = np.bincount(t, minlength=2)
        if counts.min() == 0:
            raise ValueError(f"balanced class weights need both classes, got {counts[0]} "
                             f"bonafide and {counts[1]} spoof")
        w = compute_class_weight("balanced", classes=np.array([0, 1]), y=t)
        return {0: float(w[0]), 1: float(w[1])}
    return {0: float(spec[0]), 1: float(spec[1])}


# how a model takes the arrays (models.input_spec records it in every model)
INPUTS = ("rgb255", "mel", "waveform")


def to_model_input(x, kind="rgb255"):
    """Map stored arrays to the input a model family expects.

    ``rgb255`` (EfficientNetB0): Keras' EfficientNet rescales internally and expects 0-255 pixel
    values, so a [0, 1] input would silently cripple the pretrained features; the single channel
    is repeated to three. ``mel`` (the from-scratch families): the array as it is, one channel.
    ``waveform`` (Whisper): int16 samples back to floats in [-1, 1).

    Parameters
    ----------
    x : tensor or array
        Mel arrays, shape (..., 128, 128), values in [0, 1]; or waveform windows, shape
        (..., 64524), int16 sample values.
    kind : {"rgb255", "mel", "waveform"}

    Returns
    -------
    inputs : tf.Tensor, float32
        ``rgb255``: shape (..., 128, 128, 3), values in [0, 255]; ``mel``: shape
        (..., 128, 128, 1), values in [0, 1]; ``waveform``: shape (..., 64524), values in
        [-1, 1).
    """
    tf, _ = load_tensorflow()

    x = tf.cast(tf.convert_to_tensor(x), tf.float32)
    if kind == "waveform":
        return x / F.INT16_SCALE
    if kind == "mel":
        return x[..., tf.newaxis]
    if kind != "rgb255":
        raise ValueError(f"unknown model input {kind!r}; expected one of {INPUTS}")
    return tf.repeat(x[..., tf.newaxis] * 255.0, 3, axis=-1)


def _load_npy(path, shape, dtype="<f4"):
    def read(p):
        return F.read_array(p.decode(), shape, dtype)

    tf, _ = load_tensorflow()

    x = tf.numpy_function(read, [path], tf.as_dtype(np.dtype(dtype)), stateful=False)
    x.set_shape(shape)
    return x


def _load_augmented(path, audio, seed, shape, aug, params, dtype="<f4"):
    wave = needs_audio(aug)

    def read(p, a, s):
        x = None if wave else F.read_array(p.decode(), shape, dtype)
        rng = np.random.default_rng(int(s))  # `example_seeds`: non-negative
        return augment_example(x, a.decode(), rng, aug, params)

    tf, _ = load_tensorflow()

    x = tf.numpy_function(read, [path, audio, seed], tf.float32, stateful=False)
    x.set_shape(shape)
    return x


def make_dataset(df, batch_size, shuffle=False, seed=SEED, shape=F.SHAPE,
                 with_labels=True, balanced=False, augment=None, params=None, kind="rgb255",
                 dtype="<f4", clock=None):
    """A batched, prefetched ``tf.data.Dataset`` streaming the arrays listed in ``df``.

    Parameters
    ----------
    df : pandas.DataFrame
        Manifest rows (absolute ``path``; ``target`` when ``with_labels``; ``audio`` for
        waveform augmentation).
    batch_size : int
    shuffle : bool
        Reshuffle every epoch (`epoch_order`); off for evaluation so order matches ``df``.
    seed : int
    shape : tuple of int
        Shape of each stored array, ``features.json["shape"]``.
    with_labels : bool
        Yield ``(image, target)`` pairs, else images alone.
    balanced : bool
        Training only: draw batches half bonafide, half spoof (`balanced_order`; implies
        shuffling).
    augment : dict, optional
        Training only: `augmentation` settings; each example gets a new draw every epoch,
        repeatable from ``seed``.
    params : dict, optional
        Feature parameters, required for waveform augmentation.
    kind : {"rgb255", "mel", "waveform"}
        The model's input (`to_model_input`).
    dtype : {"<f4", "<i2"}
        Type of the stored arrays (`features.array_spec`): float32 mel arrays, int16 waveforms.
    clock : sampling.EpochClock, optional
        Training: the epoch number each iteration draws its order and augmentation from
        (`sampling.epoch_batches`); default a new clock at 0 (each iteration the next epoch).
        ``train.py`` puts ``clock.callback()`` among ``fit``'s callbacks, so that a resumed run
        reads what the uninterrupted one read.

    Returns
    -------
    ds : tf.data.Dataset
        Elements ``(inputs, targets (batch,) float32)``; inputs (batch, 128, 128, 3) in [0, 255]
        for ``rgb255``, (batch, 128, 128, 1) in [0, 1] for ``mel``, (batch, 64524) in [-1, 1)
        for ``waveform``.
    """
    tf, _ = load_tensorflow()

    shape = tuple(shape)
    if augment and needs_audio(augment):
        if params is None or not params.get("clip_samples"):
            raise ValueError("waveform augmentation needs the feature parameters of a "
                             "fixed-window ('window' fit) preprocessing run")
        if "audio" not in df.columns:
            raise ValueError("waveform augmentation needs the source audio of each utterance: "
                             "this manifest.csv has no 'audio' column (an older preprocess.py "
                             "wrote it); run preprocess.py on it again (finished arrays are "
                             "kept)")
    paths = tf.constant(df["path"].to_numpy(dtype=str))
    audio = tf.constant(df["audio"].to_numpy(dtype=str) if "audio" in df.columns
                        else np.full(len(df), ""))
    targets = tf.constant(df["target"].to_numpy(np.float32) if with_labels
                          else np.zeros(len(df), np.float32))
    draws = bool(augment)  # a new, repeatable draw per example and epoch

    def example(i, *r):
        if draws:
            x = _load_augmented(tf.gather(paths, i), tf.gather(audio, i), r[0], shape, augment,
                                params, dtype)
        else:
            x = _load_npy(tf.gather(paths, i), shape, dtype)
        x = to_model_input(x, kind)
        return (x, tf.gather(targets, i)) if with_labels else x

    order_by = df["target"] if with_labels or balanced else np.zeros(len(df))
    return epoch_batches(order_by, batch_size, example, shuffle, seed, balanced, clock,
                         draws).prefetch(tf.data.AUTOTUNE)


def as_folders(data):
    """One folder or several (str, Path or a sequence of them) -> a list of str, or None."""
    if data is None:
        return None
    return [str(d) for d in ([data] if isinstance(data, (str, Path)) else data)]


def load_sources(folders):
    """The manifests of one or more preprocessed folders, concatenated, each row's folder in
    column ``source``.

    Returns
    -------
    df : pandas.DataFrame
    features : dict
        Their feature parameters, identical in every folder.

    Raises
    ------
    features.FeatureMismatch
        Folders preprocessed with different feature parameters (naming both and the keys).
    ValueError
        An utterance id listed in two folders.
    """
    folders = as_folders(folders)
    features = load_features_json(folders[0])
    parts = []
    for folder in folders:
        diff = F.differing(load_features_json(folder), features)
        if diff:
            raise F.FeatureMismatch(f"{folders[0]} and {folder} were preprocessed with different "
                                    f"feature parameters (differ in: {', '.join(diff)})")
        parts.append(load_manifest(folder).assign(source=folder))
    df = pd.concat(parts, ignore_index=True)
    dup = df[df["utt_id"].duplicated(keep=False)]
    if len(dup):
        u = dup["utt_id"].iloc[0]
        where = " and ".join(dup.loc[dup["utt_id"] == u, "source"])
        raise ValueError(f"utterance {u!r} is listed in {where}: an utterance may come from "
                         "one training folder only")
    return df, features


def load_splits(data_dir, val_data=None, val_fraction=VAL_FRACTION, seed=SEED):
    """Training and validation manifests: an 80/20 split of ``data_dir``, or all of ``data_dir``
    against all of ``val_data`` (official partitions). Each may be one preprocessed folder or
    several (their union, `load_sources`).

    Returns
    -------
    train_df, val_df : pandas.DataFrame
        With column ``source``: the folder of each utterance.
    features : dict
        The feature parameters (identical in every folder, else `features.FeatureMismatch`).
    """
    df, features = load_sources(data_dir)
    if val_data is None:
        train_df, val_df = stratified_split(df, val_fraction, seed)
    else:
        val_df, other = load_sources(val_data)
        diff = F.differing(other, features)
        if diff:
            raise F.FeatureMismatch(f"{as_folders(data_dir)[0]} and {as_folders(val_data)[0]} "
                                    "were preprocessed with different feature parameters "
                                    f"(differ in: {', '.join(diff)})")
        train_df = df
    return train_df, val_df, features
