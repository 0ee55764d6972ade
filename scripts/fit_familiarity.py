"""Teach a run what its training recordings look like, so that it can say when a recording is
unlike them (`deepfake_detector.familiarity`).

    python scripts/fit_familiarity.py --run runs/offline
    python scripts/fit_familiarity.py --run runs/aasist --data data/features/mini_train_64600

The reference is the hidden vector the run's last layer reads, for every training utterance:
by default the training part of the run's own split (``split.csv``), the threshold chosen on
its validation part (the `familiarity.QUANTILE` of their distances). A run without its
training data at hand (an imported checkpoint) takes ``--data FOLDER``: a preprocessed folder
of recordings of the kind it was trained on (for the official AASIST, ASVspoof 2019 LA
preprocessed with ``--features waveform --clip-samples 64600``), split 80/20 here. Writes
``<run>/familiarity.npz``; predict.py, serve.py and the page then give every verdict an
unfamiliarity (above 1: UNCERTAIN, "unlike the recordings this detector was trained on").
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import datasets, familiarity, features, runs  # noqa: E402
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402

# -----------------------------------------------------------------------------
MAX_TRAIN = 4000  # training utterances used at most (a random subset beyond)
SEED = 0
# -----------------------------------------------------------------------------


def reference_rows(run, data=None, seed=SEED):
    """The manifest rows of the reference (training) and development parts (``run``: the open
    `runs.Run`)."""
    import pandas as pd

    if data is not None:
        df = datasets.load_manifest(data)
        rng = np.random.default_rng(seed)
        dev = np.zeros(len(df), bool)
        dev[rng.permutation(len(df))[:max(1, len(df) // 5)]] = True
        return df[~dev].reset_index(drop=True), df[dev].reset_index(drop=True), [str(data)]
    split_file = run.path / "split.csv"
    if not split_file.is_file():
        raise FileNotFoundError(f"{run.name}: no split.csv (an imported run?): pass --data "
                                "FOLDER, recordings of the kind it was trained on")
    split = pd.read_csv(split_file, dtype={"utt_id": str}, keep_default_na=False)
    train = split[split["part"] == "train"].reset_index(drop=True)
    dev, folders = run.heldout()
    return train, dev, folders


def hidden_vectors(detector, df, params):
    """The hidden vectors (`models.logit_parts`) of every array of ``df``, as evaluate.py
    scores them (`models.predict_logits`): (n, d)."""
    from deepfake_detector.models import predict_logits

    shape, dtype = features.array_spec(params)
    ds = datasets.make_dataset(df, detector.batch_size, shape=shape, with_labels=False,
                               kind=detector.run.input_kind, dtype=dtype)
    return predict_logits(detector.model, ds, with_hidden=True)[1]


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--run", required=True, help="the run folder to fit (train.py, "
                                                 "train_offline.py or an import)")
    ap.add_argument("--model", choices=tuple(runs.MODEL_FILES), default="best",
                    help="which saved model of the run")
    ap.add_argument("--data", help="a preprocessed folder of recordings of the kind the run was "
                                   "trained on (default: the run's own training split)")
    ap.add_argument("--quantile", type=number(float, 0.5, 0.9999), default=familiarity.QUANTILE,
                    help="share of development recordings called familiar: the threshold")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    from deepfake_detector import inference

    try:
        detector = inference.Detector(args.run, args.model)
        train, dev, folders = reference_rows(detector.run, args.data)
        params = datasets.load_features_json(folders[0])
        features.check_features(detector.features, params, detector.model_path, folders[0])
        if len(train) > MAX_TRAIN:
            train = train.sample(MAX_TRAIN, random_state=SEED).reset_index(drop=True)
        fitted = familiarity.fit(hidden_vectors(detector, train, params),
                                 hidden_vectors(detector, dev, params), args.quantile)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    record = familiarity.save(args.run, fitted, detector.model_path,
                              {"data": folders, "train": len(train), "dev": len(dev)})
    print(f"fitted on {len(train)} training and {len(dev)} development utterances of "
          f"{', '.join(folders)}: threshold {record['threshold']:.4g} (distance; the "
          f"{record['quantile']:g} quantile of the development part)")
    print(f"written: {Path(args.run) / familiarity.FILE}")
    return record


if __name__ == "__main__":
    main()
