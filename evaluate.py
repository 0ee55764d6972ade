"""Evaluate a trained run: accuracy, precision, recall and F1 with a threshold sweep.

Positive class: **spoof** (label 1). Precision = share of utterances flagged spoof that are
spoof; recall = share of spoof utterances that were flagged. An utterance is flagged spoof when
P(spoof) >= threshold.

By default the run's own held-out validation part (the 20% of its 80/20 split, read from
``split.csv``) is evaluated; ``--data`` evaluates any preprocessed folder instead (e.g. the eval
partition). The model refuses data whose feature parameters differ from those it was trained on.

Writes ``<run>/eval/<name>/``: ``metrics.json`` (all numbers), ``predictions.csv``
(utt_id, label, attack, p_spoof, score, predicted; score = log-odds of bonafide, the ASVspoof
convention: higher = more bonafide) and ``thresholds.csv`` (the sweep).

Example::

    python evaluate.py --run runs/baseline                              # held-out 20%
    python evaluate.py --run runs/baseline --data data/features/eval    # another partition
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's INFO/WARNING chatter

import numpy as np
import pandas as pd

import data_loader
import train

# -----------------------------------------------------------------------------
THRESHOLD = 0.5
SWEEP = np.round(np.arange(0.01, 1.0, 0.01), 2)  # thresholds of the sweep
BATCH_SIZE = 256  # prediction batch; memory use does not grow with the number of files
POSITIVE = "spoof"
# -----------------------------------------------------------------------------


class FeatureMismatch(ValueError):
    """The data were preprocessed with other feature parameters than the model was trained on."""


def find_latest_run(runs_dir=train.RUNS_DIR):
    """The most recently written run folder under ``runs_dir`` that holds a model."""
    runs = [p.parent for p in Path(runs_dir).glob("*/config.json")
            if (p.parent / "model.keras").exists() or (p.parent / "best.keras").exists()]
    if not runs:
        raise FileNotFoundError(f"no trained run under {runs_dir}/; train one with train.py "
                                "or pass --run")
    return max(runs, key=lambda p: p.stat().st_mtime)


def load_run(run_dir, which="best"):
    """Load a run's model and its metadata.

    Parameters
    ----------
    run_dir : str or Path
    which : {"best", "final"}
        ``best.keras`` (lowest validation loss) or ``model.keras`` (last epoch); "best" falls
        back to the final model when no checkpoint exists.

    Returns
    -------
    model : keras.Model
    meta : dict
        Feature parameters, label convention and input transform saved with the model.
    path : Path
    """
    import keras

    run_dir = Path(run_dir)
    path = run_dir / ("best.keras" if which == "best" else "model.keras")
    if which == "best" and not path.exists():
        path = run_dir / "model.keras"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: has {run_dir} finished training?")
    meta = train.read_model_meta(path)
    if meta is None:
        raise ValueError(f"{path} carries no feature parameters ({train.META_NAME}); it was not "
                         "saved by train.py")
    model = keras.models.load_model(path, safe_mode=True, compile=False)
    return model, meta, path


def check_features(model_features, data_features, model_path="model", data_dir="data"):
    """Raise `FeatureMismatch` naming every differing parameter."""
    diff = sorted(k for k in set(model_features) | set(data_features)
                  if model_features.get(k) != data_features.get(k))
    if diff:
        detail = "; ".join(f"{k}: model {model_features.get(k)!r} vs data "
                           f"{data_features.get(k)!r}" for k in diff)
        raise FeatureMismatch(f"{data_dir} was preprocessed with other feature parameters than "
                              f"{model_path} was trained on ({detail}). Re-run preprocess.py "
                              "with the model's parameters.")


def predict_logits(model, ds):
    """Batched log-odds of spoof for every element of ``ds``, in order.

    The design-card model ends in Dense(1, sigmoid) named ``p_spoof``; the logit is taken before
    that sigmoid, so extreme scores stay finite and exact.

    Returns
    -------
    logits : np.ndarray, shape (n,), float64
        ``log(P(spoof) / P(bonafide))``; the ASVspoof score is ``-logits``.
    """
    import keras

    head = model.get_layer("p_spoof")
    hidden = keras.Model(model.inputs, head.input)
    h = hidden.predict(ds, verbose=0)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in head.get_weights())
    return (h.astype(np.float64) @ kernel + bias).reshape(-1)


def sigmoid(z):
    """Numerically stable logistic function."""
    from scipy.special import expit

    return expit(z)


def binary_metrics(y_true, p_spoof, threshold=THRESHOLD):
    """Accuracy, precision, recall and F1 at one threshold; positive class = spoof (1).

    Parameters
    ----------
    y_true : array, shape (n,)
        1 = spoof, 0 = bonafide.
    p_spoof : array, shape (n,)
        P(spoof); an utterance is called spoof when ``p_spoof >= threshold``.
    threshold : float

    Returns
    -------
    metrics : dict
        accuracy, precision, recall, f1 (spoof as positive), bonafide_recall, and the confusion
        counts tn, fp, fn, tp.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(p_spoof) >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, pos_label=1, average="binary", zero_division=0)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {"threshold": float(threshold), "accuracy": float(accuracy_score(y_true, y_pred)),
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "bonafide_recall": float(tn / (tn + fp)) if tn + fp else 0.0,
            "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


def threshold_sweep(y_true, p_spoof, thresholds=SWEEP):
    """`binary_metrics` over a grid of thresholds.

    Returns
    -------
    table : pandas.DataFrame
        One row per threshold.
    """
    return pd.DataFrame([binary_metrics(y_true, p_spoof, t) for t in thresholds])


def best_f1(table):
    """The sweep row with the highest F1 (the lowest threshold among ties)."""
    return table.loc[table["f1"].idxmax()].to_dict()


def evaluate(run_dir, data=None, which="best", threshold=THRESHOLD, batch_size=BATCH_SIZE,
             name=None):
    """Evaluate a run and write ``<run>/eval/<name>/``.

    Parameters
    ----------
    run_dir : str or Path
    data : str or Path, optional
        A preprocessed folder; default the run's held-out validation part.
    which : {"best", "final"}
    threshold : float
        Operating point reported beside 0.5 and the best-F1 threshold.
    batch_size : int
    name : str, optional
        Output subfolder; default ``heldout`` or the data folder's name.

    Returns
    -------
    metrics : dict
        As written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    model, meta, model_path = load_run(run_dir, which)
    if data is None:
        config = json.loads((run_dir / "config.json").read_text())
        if config["args"]["val_data"]:  # validated on another folder: that folder is held out
            data_dir = Path(config["args"]["val_data"])
            df = data_loader.load_manifest(data_dir)
        else:  # the validation part of the run's 80/20 split, as recorded in split.csv
            data_dir = Path(config["args"]["data"])
            split = pd.read_csv(run_dir / "split.csv", dtype={"utt_id": str},
                                keep_default_na=False)
            val_ids = set(split.loc[split["part"] == "val", "utt_id"])
            df = data_loader.load_manifest(data_dir)
            df = df[df["utt_id"].isin(val_ids)].reset_index(drop=True)
        name = name or "heldout"
    else:
        data_dir = Path(data)
        df = data_loader.load_manifest(data_dir)
        name = name or data_dir.resolve().name
    check_features(meta["features"], data_loader.load_features_json(data_dir), model_path,
                   data_dir)

    ds = data_loader.make_dataset(df, batch_size, shape=meta["features"]["shape"],
                                  with_labels=False)
    logits = predict_logits(model, ds)
    if not np.isfinite(logits).all():
        raise ValueError(f"{model_path} produced non-finite scores on {data_dir}")
    p_spoof = sigmoid(logits)
    y = df["target"].to_numpy(int)

    table = threshold_sweep(y, p_spoof)
    points = {"0.5": binary_metrics(y, p_spoof, 0.5), "best_f1": best_f1(table)}
    if threshold != 0.5:
        points["chosen"] = binary_metrics(y, p_spoof, threshold)
    auc = None
    if len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, p_spoof))
    metrics = {
        "run": str(run_dir), "model": model_path.name, "data": str(data_dir), "name": name,
        "n": {"total": int(len(y)), "bonafide": int((y == 0).sum()), "spoof": int((y == 1).sum())},
        "positive_class": "spoof (label 1): precision/recall/F1 measure detection of spoofs",
        "decision": "spoof when P(spoof) >= threshold",
        "roc_auc": auc,
        "operating_points": points,
        "sweep": table.to_dict("records"),
    }
    out = run_dir / "eval" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    table.to_csv(out / "thresholds.csv", index=False)
    pd.DataFrame({"utt_id": df["utt_id"], "label": df["label"], "attack": df["attack"],
                  "p_spoof": p_spoof, "score": -logits,
                  "predicted": np.where(p_spoof >= threshold, "spoof", "bonafide")}
                 ).to_csv(out / "predictions.csv", index=False)
    metrics["out_dir"] = str(out)
    return metrics


def format_report(metrics):
    """A human-readable summary of `evaluate`'s result."""
    n = metrics["n"]
    lines = [f"{metrics['run']} ({metrics['model']}) on {metrics['name']} "
             f"[{metrics['data']}]: {n['total']} utterances, {n['bonafide']} bonafide, "
             f"{n['spoof']} spoof",
             f"positive class = {metrics['positive_class']}",
             f"ROC AUC: {metrics['roc_auc']:.4f}" if metrics["roc_auc"] is not None else
             "ROC AUC: undefined (one class only)", ""]
    hdr = f"{'point':>10s} {'thresh':>6s} {'acc':>6s} {'prec':>6s} {'recall':>6s} {'F1':>6s}"
    lines.append(hdr)
    for key, m in metrics["operating_points"].items():
        lines.append(f"{key:>10s} {m['threshold']:6.2f} {m['accuracy']:6.3f} "
                     f"{m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f}")
    lines += ["", "threshold sweep (every 0.1; full table in thresholds.csv):", hdr]
    for m in metrics["sweep"]:
        if round(m["threshold"] * 100) % 10 == 0:
            lines.append(f"{'':>10s} {m['threshold']:6.2f} {m['accuracy']:6.3f} "
                         f"{m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Evaluate a trained run: accuracy, precision, recall, F1 (positive class = "
                    "spoof) at 0.5 and over a threshold sweep.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--run", help="run folder from train.py (default: the newest under runs/)")
    ap.add_argument("--data", help="preprocessed folder to evaluate (default: the run's held-out "
                                   "validation part)")
    ap.add_argument("--model", choices=("best", "final"), default="best",
                    help="best.keras (lowest validation loss) or model.keras (last epoch)")
    ap.add_argument("--threshold", type=float, default=THRESHOLD,
                    help="decision threshold on P(spoof) for predictions.csv (also reported)")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="prediction batch size")
    ap.add_argument("--name", help="output subfolder under <run>/eval/ (default: 'heldout' or the "
                                   "data folder's name)")
    args = ap.parse_args(argv)
    if not 0 < args.threshold < 1:
        ap.error("--threshold must be in (0, 1)")
    try:
        run_dir = Path(args.run) if args.run else find_latest_run()
        metrics = evaluate(run_dir, args.data, args.model, args.threshold, args.batch_size,
                           args.name)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(format_report(metrics))
    print(f"\nwritten: {metrics['out_dir']}/metrics.json, predictions.csv, thresholds.csv")
    return metrics


if __name__ == "__main__":
    main()
