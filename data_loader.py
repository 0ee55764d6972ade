"""The 80/20 train/validation split as ``tf.data`` datasets, from a command line or an import.

Label convention, everywhere in this project: target 1 = spoof, 0 = bonafide; the model outputs
P(spoof). Scores that leave the program follow ASVspoof (higher = more bonafide).

Importable (the library lives in `deepfake_detector.datasets`; its public functions are here)::

    from data_loader import load_splits, make_dataset
    train_df, val_df, features = load_splits("data/features/train")     # stratified 80/20
    train_ds = make_dataset(train_df, 16, shuffle=True, shape=features["shape"])

Example::

    python data_loader.py data/features/train          # split sizes per label and attack
"""

import argparse

import pandas as pd

from deepfake_detector.cli import HelpFormatter
from deepfake_detector.datasets import (MANIFEST_COLUMNS, SEED, VAL_FRACTION,  # noqa: F401
                                        as_folders, check_arrays,
                                        class_weights, load_features_json, load_manifest,
                                        load_sources, load_splits, make_dataset,
                                        stratified_split, to_model_input)
from deepfake_detector.sampling import balanced_indices, epoch_order  # noqa: F401


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


def build_parser():
    """The command line of data_loader.py."""
    ap = argparse.ArgumentParser(
        description="Print the train/validation split of a preprocessed folder, per label and "
                    "attack (label 1 = spoof).",
        formatter_class=HelpFormatter)
    ap.add_argument("data", nargs="?", default="data/features/train",
                    help="preprocessed folder (manifest.csv, features.json, arrays)")
    ap.add_argument("--val-data", help="validate on this preprocessed folder instead of "
                                       "splitting DATA (official partitions)")
    ap.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                    help="share of DATA held out for validation, stratified by label")
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the split")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
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
