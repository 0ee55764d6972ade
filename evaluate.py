"""Evaluate a detector the way ASVspoof papers do: EER, min t-DCF, per-attack breakdown, plus the
design card's accuracy, precision, recall and F1 with a threshold sweep.

Conventions (also in README):

- **score** = log-odds of bonafide, ``log(P(bonafide) / P(spoof))``: higher = more bonafide, the
  ASVspoof convention. Score files written here can be read by the ASVspoof evaluation packages.
- **EER and min t-DCF** take bonafide as the target class (ASVspoof 2019 evaluation plan).
- **precision, recall, F1** take **spoof** as the positive class: recall = share of spoofs caught,
  precision = share of flagged utterances that are spoofs. Spoof when P(spoof) >= threshold.

Three sources of scores, one report:

    python evaluate.py --run runs/baseline                           # the run's held-out part
    python evaluate.py --run runs/baseline --data data/features/eval # any preprocessed folder
    python evaluate.py --scores other_system.txt --protocol ASVspoof2019.LA.cm.eval.trl.txt

Add ``--asv-scores LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt`` for
the min t-DCF. Writes to ``<run>/eval/<name>/`` (or ``--out``): ``metrics.json``, ``scores.txt``
(``utt_id score``), ``predictions.csv``, ``per_attack.csv``, ``thresholds.csv`` and the plots
``roc.png``, ``det.png``, ``score_hist.png``, ``confusion.png``, ``training_curves.png``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's INFO/WARNING chatter

import numpy as np
import pandas as pd

import data_loader
import preprocess
import train

# -----------------------------------------------------------------------------
THRESHOLD = 0.5
SWEEP = np.round(np.arange(0.01, 1.0, 0.01), 2)  # P(spoof) thresholds of the sweep
BATCH_SIZE = 32  # prediction batch: fastest on a 2-core CPU (149 files/s vs 98 at 256, 1 GB RSS)
# ASVspoof 2019 t-DCF cost model (evaluation plan, Table 4; Kinnunen et al., IEEE/ACM TASLP 2020)
COST_2019 = {"p_spoof": 0.05, "p_tar": (1 - 0.05) * 0.99, "p_non": (1 - 0.05) * 0.01,
             "c_miss_asv": 1.0, "c_fa_asv": 10.0, "c_miss_cm": 1.0, "c_fa_cm": 10.0}
PLOTS = ("roc.png", "det.png", "score_hist.png", "confusion.png", "training_curves.png")
# -----------------------------------------------------------------------------


class FeatureMismatch(ValueError):
    """The data were preprocessed with other feature parameters than the model was trained on."""


# ----------------------------------------------------------------------------- ASVspoof metrics


def det_curve(bonafide, spoof):
    """Miss and false-alarm rates of a countermeasure over every distinct threshold.

    The decision rule is ASVspoof's: accept as bonafide when ``score >= t``. A miss is a rejected
    bonafide utterance, a false alarm an accepted spoof. Thresholds are the distinct score values
    plus +inf, so tied scores are never split.

    Parameters
    ----------
    bonafide, spoof : array, shape (n_bonafide,), (n_spoof,)
        Scores, higher = more bonafide.

    Returns
    -------
    p_miss, p_fa, thresholds : np.ndarray, shape (n_thresholds,)
        ``p_miss`` rises from 0 to 1 and ``p_fa`` falls from 1 to 0 as ``thresholds`` increase.
    """
    bonafide = np.sort(np.asarray(bonafide, dtype=np.float64))
    spoof = np.sort(np.asarray(spoof, dtype=np.float64))
    if bonafide.size == 0 or spoof.size == 0:
        raise ValueError(f"a DET curve needs bonafide and spoof scores, got {bonafide.size} "
                         f"bonafide and {spoof.size} spoof")
    thresholds = np.append(np.unique(np.concatenate([bonafide, spoof])), np.inf)
    p_miss = np.searchsorted(bonafide, thresholds, side="left") / bonafide.size  # bona < t
    p_fa = 1.0 - np.searchsorted(spoof, thresholds, side="left") / spoof.size  # spoof >= t
    return p_miss, p_fa, thresholds


def compute_eer(bonafide, spoof):
    """Equal error rate, bonafide as target.

    As in the ASVspoof 2019/2021 evaluation packages (``eval_metrics.compute_eer``): sweep the
    DET curve over the sorted scores and, at the point where miss and false-alarm rates are
    closest, take their mean. The one difference: tied scores are treated as one threshold (the
    package orders tied scores arbitrarily), so all-equal scores give 50%, and the EER is
    invariant to any strictly increasing transform of the scores.

    Returns
    -------
    eer : float in [0, 1]
    threshold : float
        Score threshold of that point (bonafide when score >= threshold).
    """
    p_miss, p_fa, thresholds = det_curve(bonafide, spoof)
    i = int(np.argmin(np.abs(p_miss - p_fa)))
    return float((p_miss[i] + p_fa[i]) / 2), float(thresholds[i])


def read_asv_scores(path):
    """Read an ASVspoof 2019 ASV score file (``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``).

    Each line: ``SOURCE KEY SCORE`` with KEY in target/nontarget/spoof and SOURCE the attack id
    for spoof trials.

    Returns
    -------
    df : pandas.DataFrame
        Columns ``source, key, score``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ASV score file {path} not found")
    rows = []
    for lineno, cols, line in preprocess.iter_columns(path):
        if len(cols) != 3 or cols[1] not in ("target", "nontarget", "spoof"):
            raise ValueError(f"{path}:{lineno}: expected 'SOURCE target|nontarget|spoof SCORE', "
                             f"got {line!r}")
        try:
            rows.append((cols[0], cols[1], float(cols[2])))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: score {cols[2]!r} is not a number") from None
    df = pd.DataFrame(rows, columns=["source", "key", "score"])
    missing = {"target", "nontarget", "spoof"} - set(df["key"])
    if missing:
        raise ValueError(f"{path}: no {', '.join(sorted(missing))} trials; min t-DCF needs all "
                         "three")
    if not np.isfinite(df["score"]).all():
        raise ValueError(f"{path}: NaN or inf ASV scores")
    return df


def min_tdcf(bonafide, spoof, asv, cost=COST_2019):
    """Normalized minimum tandem detection cost function, ASVspoof 2019 definition.

    t-DCF(t) = C1 * P_miss_cm(t) + C2 * P_fa_cm(t), normalized by min(C1, C2), with
    C1 = P_tar (C_miss_cm - C_miss_asv P_miss_asv) - P_non C_fa_asv P_fa_asv and
    C2 = C_fa_cm P_spoof (1 - P_miss_spoof_asv), the ASV error rates taken at the ASV's own EER
    threshold (ASVspoof 2019 evaluation plan, Sec. 3; Kinnunen et al., "Tandem assessment of
    spoofing countermeasures and automatic speaker verification", IEEE/ACM TASLP 2020).

    Parameters
    ----------
    bonafide, spoof : array
        Countermeasure scores, higher = more bonafide.
    asv : pandas.DataFrame
        ASV scores (`read_asv_scores`): ``key`` target/nontarget/spoof and ``score``.
    cost : dict
        Priors and costs; default `COST_2019`.

    Returns
    -------
    result : dict
        ``min_tdcf``, its CM ``threshold``, ``asv_eer``, ``asv_threshold``, ``p_fa_asv``,
        ``p_miss_asv``, ``p_miss_spoof_asv``, ``c1``, ``c2``.
    """
    tar = asv.loc[asv["key"] == "target", "score"].to_numpy()
    non = asv.loc[asv["key"] == "nontarget", "score"].to_numpy()
    spoof_asv = asv.loc[asv["key"] == "spoof", "score"].to_numpy()
    asv_eer, asv_thr = compute_eer(tar, non)  # target speakers play the "bonafide" role here
    p_fa_asv = float(np.mean(non >= asv_thr))
    p_miss_asv = float(np.mean(tar < asv_thr))
    p_miss_spoof_asv = float(np.mean(spoof_asv < asv_thr))
    c = cost
    c1 = c["p_tar"] * (c["c_miss_cm"] - c["c_miss_asv"] * p_miss_asv) \
        - c["p_non"] * c["c_fa_asv"] * p_fa_asv
    c2 = c["c_fa_cm"] * c["p_spoof"] * (1 - p_miss_spoof_asv)
    if c1 <= 0 or c2 <= 0:
        raise ValueError(f"the ASV error rates make the t-DCF undefined (C1={c1:.4g}, "
                         f"C2={c2:.4g}); check the ASV score file")
    p_miss, p_fa, thresholds = det_curve(bonafide, spoof)
    tdcf = (c1 * p_miss + c2 * p_fa) / min(c1, c2)
    i = int(np.argmin(tdcf))
    return {"min_tdcf": float(tdcf[i]), "threshold": float(thresholds[i]),
            "asv_eer": asv_eer, "asv_threshold": asv_thr, "p_fa_asv": p_fa_asv,
            "p_miss_asv": p_miss_asv, "p_miss_spoof_asv": p_miss_spoof_asv,
            "c1": float(c1), "c2": float(c2)}


# ----------------------------------------------------------------------------- classification


def sigmoid(z):
    """Numerically stable logistic function."""
    from scipy.special import expit

    return expit(z)


def classification_metrics(y_true, y_pred):
    """Accuracy, precision, recall and F1 of hard decisions; positive class = spoof (1).

    Parameters
    ----------
    y_true, y_pred : array, shape (n,)
        1 = spoof, 0 = bonafide.

    Returns
    -------
    metrics : dict
        accuracy, precision, recall, f1 (spoof as positive), bonafide_recall (share of bonafide
        accepted), and the confusion counts tn, fp, fn, tp.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, pos_label=1, average="binary", zero_division=0)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "precision": float(precision),
            "recall": float(recall), "f1": float(f1),
            "bonafide_recall": float(tn / (tn + fp)) if tn + fp else 0.0,
            "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


def binary_metrics(y_true, p_spoof, threshold=THRESHOLD):
    """`classification_metrics` at one threshold: spoof when ``p_spoof >= threshold``.

    Returns
    -------
    metrics : dict
        ``threshold`` and the keys of `classification_metrics`.
    """
    y_pred = np.asarray(p_spoof) >= threshold
    return {"threshold": float(threshold), **classification_metrics(y_true, y_pred)}


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
    return table.loc[[table["f1"].idxmax()]].to_dict("records")[0]


# ----------------------------------------------------------------------------- calibration


def parse_calibration(method):
    """Validate a ``--calibrate`` value: ``eer``, ``f1``, ``far:RATE`` (0 <= RATE < 1) or
    ``none``. Returns it normalized (lower case)."""
    m = str(method).strip().lower()
    if m in ("eer", "f1", "none"):
        return m
    if m.startswith("far:"):
        try:
            rate = float(m[4:])
        except ValueError:
            rate = -1.0
        if 0 <= rate < 1:
            return f"far:{rate:g}"
    raise ValueError(f"calibration {method!r}: expected eer, f1, far:RATE (e.g. far:0.05, the "
                     "share of bonafide utterances allowed to be flagged as spoof) or none")


def calibrate_threshold(y_true, score, method="eer"):
    """Choose a decision threshold on validation scores.

    Parameters
    ----------
    y_true : array of {0, 1}, shape (n,)
        1 = spoof.
    score : array, shape (n,)
        Log-odds of bonafide (higher = more bonafide).
    method : str
        ``eer``: the EER operating point (`compute_eer`'s DET point, where the share of bonafide
        flagged and the share of spoofs missed are closest). ``f1``: the highest F1 over every
        distinct threshold (positive class spoof). ``far:RATE``: the most spoofs caught while at
        most RATE of the bonafide utterances are flagged as spoof (false alarms of a deepfake
        detector; in ASVspoof terms the CM miss rate).

    Returns
    -------
    cal : dict
        ``method``; ``score_threshold`` (spoof when score < it) and ``threshold`` (the same
        decision on P(spoof) = sigmoid(-score): spoof when P(spoof) >= it), placed midway
        between two adjacent distinct validation scores so no validation utterance sits on
        it; and on the validation data ``n``, ``bonafide_flagged`` (share of bonafide called
        spoof), ``spoof_missed`` (share of spoofs called bonafide), ``eer``.
    """
    method = parse_calibration(method)
    if method == "none":
        raise ValueError("calibration 'none' chooses no threshold")
    y = np.asarray(y_true).astype(int)
    score = np.asarray(score, dtype=np.float64)
    bona, spoof = score[y == 0], score[y == 1]
    p_miss, p_fa, thresholds = det_curve(bona, spoof)  # bonafide when score >= t
    if method == "eer":
        i = int(np.argmin(np.abs(p_miss - p_fa)))
    elif method == "f1":
        tp, fn, fp = spoof.size * (1 - p_fa), spoof.size * p_fa, bona.size * p_miss
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        i = int(np.argmax(f1))
    else:
        rate = float(method[4:])
        i = int(np.flatnonzero(p_miss <= rate + 1e-12)[-1])  # p_miss rises with t
    distinct = thresholds[:-1]  # the distinct scores
    below = distinct[distinct < thresholds[i]]
    lower = below[-1] if below.size else thresholds[i] - 1.0
    upper = thresholds[i] if np.isfinite(thresholds[i]) else distinct[-1] + 2.0
    t = float((lower + upper) / 2)  # same decisions as ">= thresholds[i]", no score on it
    eer, _ = compute_eer(bona, spoof)
    return {"method": method, "score_threshold": t, "threshold": float(sigmoid(-t)),
            "n": {"bonafide": int(bona.size), "spoof": int(spoof.size)},
            "bonafide_flagged": float(p_miss[i]), "spoof_missed": float(p_fa[i]), "eer": eer}


def read_threshold(run_dir, which="best"):
    """The calibrated threshold train.py saved for ``which`` model of a run
    (``threshold.json``), or None."""
    path = Path(run_dir) / "threshold.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    cal = saved.get(which)
    if cal is None and which == "best" and not (Path(run_dir) / "best.keras").exists():
        cal = saved.get("final")  # load_run falls back the same way
    return cal


# ----------------------------------------------------------------------------- scores


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
        ``best.keras`` (best validation metric, see train.py ``--monitor``) or
        ``model.keras`` (last epoch); "best" falls back to the final model when no checkpoint
        exists.

    Returns
    -------
    model : keras.Model
    meta : dict
        Feature parameters, label convention and input transform saved with the model.
    path : Path
    """
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
    return train.load_model(path), meta, path


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


def logit_parts(model):
    """The model up to its last layer, and that layer's weights: ``logit = hidden(x) @ kernel +
    bias`` is log(P(spoof) / P(bonafide)), taken before the sigmoid so extreme scores stay finite.

    Returns
    -------
    hidden : keras.Model
        Image batch (n, 128, 128, 3) -> (n, dense_units).
    kernel, bias : np.ndarray, float64
    """
    import keras

    head = model.get_layer("p_spoof")
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in head.get_weights())
    return keras.Model(model.input, head.input), kernel, bias


def predict_logits(model, ds):
    """Batched log-odds of spoof for every element of ``ds``, in order (see `logit_parts`).

    Returns
    -------
    logits : np.ndarray, shape (n,), float64
        ``log(P(spoof) / P(bonafide))``; the ASVspoof score is ``-logits``.
    """
    hidden, kernel, bias = logit_parts(model)
    h = hidden.predict(ds, verbose=0)
    return (h.astype(np.float64) @ kernel + bias).reshape(-1)


def heldout_manifest(run_dir):
    """The manifest rows a run held out: its validation folder, or the validation part of its
    80/20 split (from ``split.csv``).

    Returns
    -------
    df : pandas.DataFrame
    data_dir : Path
    """
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    if config["args"]["val_data"]:
        data_dir = Path(config["args"]["val_data"])
        return data_loader.load_manifest(data_dir), data_dir
    data_dir = Path(config["args"]["data"])
    split = pd.read_csv(run_dir / "split.csv", dtype={"utt_id": str}, keep_default_na=False)
    val_ids = set(split.loc[split["part"] == "val", "utt_id"])
    df = data_loader.load_manifest(data_dir)
    return df[df["utt_id"].isin(val_ids)].reset_index(drop=True), data_dir


def scores_from_model(run_dir, data=None, which="best", batch_size=BATCH_SIZE):
    """Score a preprocessed folder (default: the run's held-out part) with a run's model.

    Returns
    -------
    table : pandas.DataFrame
        ``utt_id, speaker, attack, key, score, p_spoof`` (score = log-odds of bonafide).
    source : dict
        What was scored with what (for metrics.json).
    """
    model, meta, model_path = load_run(run_dir, which)
    if data is None:
        df, data_dir = heldout_manifest(run_dir)
    else:
        data_dir = Path(data)
        df = data_loader.load_manifest(data_dir)
    check_features(meta["features"], data_loader.load_features_json(data_dir), model_path,
                   data_dir)
    ds = data_loader.make_dataset(df, batch_size, shape=meta["features"]["shape"],
                                  with_labels=False)
    logits = predict_logits(model, ds)
    table = pd.DataFrame({"utt_id": df["utt_id"], "speaker": df["speaker"],
                          "attack": df["attack"], "key": df["label"], "score": -logits,
                          "p_spoof": sigmoid(logits)})
    source = {"mode": "model", "run": str(run_dir), "model": model_path.name,
              "data": str(data_dir), "heldout": data is None}
    return table, source


def read_score_file(path):
    """Read a CM score file: ``utt_id score`` per line (extra middle columns, as in the 2019
    ``utt_id attack key score`` format, are ignored; a header line is skipped).

    Returns
    -------
    scores : pandas.Series
        Float scores (higher = more bonafide) indexed by utterance id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score file {path} not found")
    ids, values = [], []
    for lineno, cols, line in preprocess.iter_columns(path):
        if cols[0].startswith("#"):
            continue
        if len(cols) < 2:
            raise ValueError(f"{path}:{lineno}: expected 'utt_id score', got {line!r}")
        try:
            values.append(float(cols[-1]))
        except ValueError:
            if not ids:  # a header
                continue
            raise ValueError(f"{path}:{lineno}: score {cols[-1]!r} is not a number") from None
        ids.append(cols[0])
    scores = pd.Series(values, index=ids, dtype=np.float64)
    if scores.empty:
        raise ValueError(f"{path}: no scores")
    dup = scores.index[scores.index.duplicated()]
    if len(dup):
        raise ValueError(f"{path}: utterance {dup[0]!r} is scored more than once")
    return scores


def scores_from_file(scores_path, protocol, fmt=None):
    """Join a score file with a protocol (any format `preprocess.parse_protocol` reads).

    Returns
    -------
    table : pandas.DataFrame
        ``utt_id, speaker, attack, key, score, p_spoof``; ``p_spoof = sigmoid(-score)``, which is
        a probability only if the scores are log-odds (EER, AUC and t-DCF use the order alone).
    source : dict
    """
    scores = read_score_file(scores_path)
    proto = preprocess.parse_protocol(protocol, fmt).set_index("utt_id")
    n_unscored = len(proto) - len(scores)
    unknown = scores.index.difference(proto.index)
    if len(unknown):
        raise ValueError(f"{scores_path}: {len(unknown)} scored utterances are not in {protocol}, "
                         f"e.g. {unknown[0]!r}")
    proto = proto.loc[scores.index]
    table = pd.DataFrame({"utt_id": scores.index, "speaker": proto["speaker"].to_numpy(),
                          "attack": proto["attack"].to_numpy(), "key": proto["label"].to_numpy(),
                          "score": scores.to_numpy()})
    table["p_spoof"] = sigmoid(-table["score"].to_numpy())
    source = {"mode": "scores", "scores": str(scores_path), "protocol": str(protocol),
              "protocol_entries_without_score": int(n_unscored)}
    return table, source


# ----------------------------------------------------------------------------- the report


def check_scores(table):
    """Refuse scores that cannot be evaluated: NaN/inf, or fewer than two classes."""
    bad = table.loc[~np.isfinite(table["score"].to_numpy(np.float64)), "utt_id"]
    if len(bad):
        raise ValueError(f"{len(bad)} scores are NaN or inf, e.g. for {bad.iloc[0]!r}")
    counts = table["key"].value_counts()
    if len(counts) < 2:
        raise ValueError(f"evaluation needs bonafide and spoof utterances; got only "
                         f"{counts.index[0]} ({counts.iloc[0]})")


def json_safe(obj):
    """``obj`` with numpy scalars made native and non-finite floats made None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def per_attack_table(table, threshold, asv=None):
    """EER of each attack against all bonafide utterances, and its detection rate.

    Returns
    -------
    df : pandas.DataFrame
        One row per attack (``bonafide`` first): ``n``, ``eer`` (attack vs all bonafide),
        ``detected`` (share called spoof at P(spoof) >= threshold; for bonafide, the share
        wrongly called spoof), ``min_tdcf`` when ASV scores of that attack exist.
    """
    bona = table[table["key"] == "bonafide"]
    rows = [{"attack": "bonafide", "n": len(bona), "eer": None,
             "detected": float(np.mean(bona["p_spoof"] >= threshold)), "min_tdcf": None}]
    for attack, grp in sorted(table[table["key"] == "spoof"].groupby("attack")):
        row = {"attack": attack, "n": len(grp),
               "eer": compute_eer(bona["score"], grp["score"])[0],
               "detected": float(np.mean(grp["p_spoof"] >= threshold)), "min_tdcf": None}
        if asv is not None:
            sub = asv[(asv["key"] != "spoof") | (asv["source"] == attack)]
            if (sub["key"] == "spoof").any():
                row["min_tdcf"] = min_tdcf(bona["score"], grp["score"], sub)["min_tdcf"]
        rows.append(row)
    return pd.DataFrame(rows)


def compute_report(table, threshold=None, asv=None, calibrated=None):
    """Every number of the evaluation, from a table of scores.

    Parameters
    ----------
    table : pandas.DataFrame
        ``utt_id, speaker, attack, key, score, p_spoof``.
    threshold : float, optional
        User's P(spoof) operating point; default the calibrated one, else 0.5.
    calibrated : dict, optional
        The run's calibrated threshold (`calibrate_threshold` on its validation data).
    asv : pandas.DataFrame, optional
        ASV scores (`read_asv_scores`) for the min t-DCF.

    Returns
    -------
    metrics : dict
        As written to metrics.json (without the file list).
    per_attack, sweep : pandas.DataFrame
    """
    from sklearn.metrics import roc_auc_score

    check_scores(table)
    warnings = []
    y = (table["key"] == "spoof").to_numpy(int)
    score, p = table["score"].to_numpy(np.float64), table["p_spoof"].to_numpy(np.float64)
    bona, spoof = score[y == 0], score[y == 1]
    eer, eer_thr = compute_eer(bona, spoof)
    if eer > 0.5:
        warnings.append(f"EER {eer:.1%} is above 50%, worse than chance: labels or score "
                        "direction look swapped (scores must be higher for bonafide), or the "
                        "detector learned nothing")
    sweep = threshold_sweep(y, p)
    points = {"0.5": binary_metrics(y, p, 0.5)}
    if calibrated is not None:  # decided on the score, exactly as calibrated
        t = calibrated["score_threshold"]
        points["calibrated"] = {"threshold": calibrated["threshold"], "score_threshold": t,
                                "method": calibrated["method"],
                                **classification_metrics(y, score < t)}
    # these two are chosen on the evaluated data itself: oracle points, not deployable
    points["best_f1"] = best_f1(sweep)
    points["eer"] = {"threshold": float(sigmoid(-eer_thr)), "score_threshold": eer_thr,
                     **classification_metrics(y, score < eer_thr)}
    if threshold is not None:
        points["chosen"] = binary_metrics(y, p, threshold)
        source = "--threshold"
    elif calibrated is not None:
        threshold, points["chosen"] = calibrated["threshold"], dict(points["calibrated"])
        source = f"calibrated on the run's validation data ({calibrated['method']})"
    else:
        threshold, points["chosen"] = THRESHOLD, dict(points["0.5"])
        source = "default 0.5 (no calibrated threshold saved with the run)"
    for point in points.values():
        if "score_threshold" not in point:
            t = point["threshold"]
            point["score_threshold"] = float(np.log((1 - t) / t))
    if asv is not None:
        tdcf = {**min_tdcf(bona, spoof, asv), "cost_model": "ASVspoof 2019", **COST_2019}
    else:
        tdcf = {"min_tdcf": None,
                "reason": "not computed: no ASV scores given (--asv-scores, e.g. "
                          "ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt)"}
    per_attack = per_attack_table(table, threshold, asv)
    metrics = {
        "threshold": {"value": float(threshold), "source": source},
        "n": {"total": int(len(y)), "bonafide": int((y == 0).sum()), "spoof": int((y == 1).sum())},
        "conventions": {
            "score": "log-odds of bonafide: higher = more bonafide (ASVspoof)",
            "eer_tdcf_target": "bonafide; accepted as bonafide when score >= threshold",
            "positive_class": "spoof (label 1) for precision, recall, F1",
            "decision": "spoof when P(spoof) >= threshold"},
        "eer": eer, "eer_threshold": eer_thr,
        "roc_auc": float(roc_auc_score(y, p)),
        "min_tdcf": tdcf,
        "per_attack": per_attack.replace({np.nan: None}).to_dict("records"),
        "operating_points": points,
        "sweep": sweep.to_dict("records"),
        "warnings": warnings,
    }
    return metrics, per_attack, sweep


def save_plots(table, metrics, out_dir, history_csv=None):
    """ROC, DET (normal-deviate axes), score histograms, confusion matrix at the chosen
    threshold and, when ``history_csv`` exists, the training curves. Returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm
    from sklearn.metrics import ConfusionMatrixDisplay, roc_curve

    out_dir = Path(out_dir)
    y = (table["key"] == "spoof").to_numpy(int)
    score, p = table["score"].to_numpy(np.float64), table["p_spoof"].to_numpy(np.float64)
    eer = metrics["eer"]
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(name)

    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"AUC = {metrics['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="bonafide flagged as spoof (false positive rate)",
           ylabel="spoof detected (true positive rate)", title="ROC (positive class: spoof)")
    ax.legend(loc="lower right")
    save(fig, "roc.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    p_miss, p_fa, _ = det_curve(score[y == 0], score[y == 1])
    lim = 0.5 / len(y)  # rates of 0 and 1 drawn half an utterance inside the axes
    ticks = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95])
    ticks = ticks[ticks >= min(lim, 0.01)]
    ax.plot(norm.ppf(np.clip(p_fa, lim, 1 - lim)), norm.ppf(np.clip(p_miss, lim, 1 - lim)))
    e = norm.ppf(np.clip(eer, lim, 1 - lim))
    ax.plot([e], [e], "o", label=f"EER = {eer:.2%}")
    ax.plot(norm.ppf([lim, 1 - lim]), norm.ppf([lim, 1 - lim]), ":", color="grey")
    labels = [f"{100 * t:g}%" for t in ticks]
    ax.set_xticks(norm.ppf(ticks), labels, rotation=45)
    ax.set_yticks(norm.ppf(ticks), labels)
    ax.set_xlim(norm.ppf([min(lim, 0.01), 1 - lim]))
    ax.set_ylim(norm.ppf([min(lim, 0.01), 1 - lim]))
    ax.set(xlabel="false alarm rate (spoof accepted)", ylabel="miss rate (bonafide rejected)",
           title="DET (bonafide = target)")
    ax.legend(loc="upper right")
    save(fig, "det.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(score, bins=40)
    for key, color in (("bonafide", "tab:green"), ("spoof", "tab:red")):
        ax.hist(score[table["key"] == key], bins=bins, alpha=0.6, color=color,
                label=f"{key} ({int((table['key'] == key).sum())})", density=True)
    ax.axvline(metrics["eer_threshold"], color="k", ls="--", label="EER threshold")
    ax.set(xlabel="score (log-odds of bonafide; higher = more bonafide)", ylabel="density",
           title="Score distributions")
    ax.legend()
    save(fig, "score_hist.png")

    chosen = metrics["operating_points"]["chosen"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        y, (p >= chosen["threshold"]).astype(int), labels=[0, 1],
        display_labels=["bonafide", "spoof"], ax=ax, colorbar=False)
    ax.set_title(f"P(spoof) >= {chosen['threshold']:.2f}")
    save(fig, "confusion.png")

    if history_csv is not None and Path(history_csv).exists():
        h = pd.read_csv(history_csv)
        keys = [k for k in ("loss", "accuracy", "auc") if k in h]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5))
        for ax, k in zip(np.atleast_1d(axes), keys):
            ax.plot(h["epoch"] + 1, h[k], "o-", label="train")
            if f"val_{k}" in h:
                ax.plot(h["epoch"] + 1, h[f"val_{k}"], "o-", label="validation")
            ax.set(xlabel="epoch", title=k)
            ax.legend()
        save(fig, "training_curves.png")
    return written


def write_outputs(table, metrics, per_attack, sweep, out_dir, threshold):
    """metrics.json, scores.txt, predictions.csv, per_attack.csv, thresholds.csv."""
    out_dir = Path(out_dir)
    with open(out_dir / "scores.txt", "w", encoding="utf-8") as f:
        for u, s in zip(table["utt_id"], table["score"]):
            f.write(f"{u} {s:.17g}\n")  # full precision: re-reading gives the same EER
    pred = table.assign(predicted=np.where(table["p_spoof"] >= threshold, "spoof", "bonafide"))
    pred[["utt_id", "speaker", "attack", "key", "score", "p_spoof", "predicted"]].to_csv(
        out_dir / "predictions.csv", index=False)
    per_attack.to_csv(out_dir / "per_attack.csv", index=False)
    sweep.to_csv(out_dir / "thresholds.csv", index=False)
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2,
                                                     allow_nan=False) + "\n")


def evaluate(run_dir=None, data=None, which="best", threshold=None, batch_size=BATCH_SIZE,
             name=None, scores=None, protocol=None, fmt=None, asv_scores=None, out=None,
             plots=True, scored=None):
    """Score (a run's model, or a score file) and write the full report.

    Parameters
    ----------
    run_dir : str or Path, optional
        A run from train.py (model mode).
    data : str or Path, optional
        Preprocessed folder to score; default the run's held-out part.
    which : {"best", "final"}
    threshold : float, optional
        P(spoof) operating point used for predictions.csv, per-attack detection and the
        confusion matrix; default the run's calibrated threshold (``threshold.json``), else
        0.5. Metrics at 0.5 and at the calibrated threshold are always reported.
    batch_size : int
    name : str, optional
        Output subfolder under ``<run>/eval/``; default ``heldout`` or the data folder's name.
    scores, protocol, fmt : optional
        Score-file mode: a ``utt_id score`` file, its protocol and the protocol's format.
    asv_scores : str or Path, optional
        ASVspoof 2019 ASV score file, for the min t-DCF.
    out : str or Path, optional
        Output folder (overrides the defaults).
    plots : bool
    scored : tuple, optional
        ``(table, source)`` that `scores_from_model` returned for this run and data: report
        the same scores again (e.g. at another threshold) without predicting again.

    Returns
    -------
    metrics : dict
        As written to metrics.json, plus ``out_dir``.
    """
    history = None
    if scores is not None:
        if protocol is None:
            raise ValueError("--scores needs --protocol (the labels of the scored utterances)")
        table, source = scores_from_file(scores, protocol, fmt)
        name = name or Path(scores).stem
        out_dir = Path(out) if out else Path(scores).parent / f"{Path(scores).stem}_eval"
    else:
        table, source = scored or scores_from_model(run_dir, data, which, batch_size)
        if data is None:
            name = name or "heldout"
        else:
            name = name or Path(data).resolve().name
        out_dir = Path(out) if out else Path(run_dir) / "eval" / name
        history = Path(run_dir) / "history.csv"
    asv = read_asv_scores(asv_scores) if asv_scores else None
    calibrated = read_threshold(run_dir, which) if scores is None else None
    metrics, per_attack, sweep = compute_report(table, threshold, asv, calibrated)
    threshold = metrics["threshold"]["value"]
    metrics = {"name": name, "source": source, **metrics}
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ["metrics.json", "scores.txt", "predictions.csv", "per_attack.csv", "thresholds.csv"]
    if plots:
        files += save_plots(table, metrics, out_dir, history)
    metrics["files"] = files
    write_outputs(table, metrics, per_attack, sweep, out_dir, threshold)
    metrics["out_dir"] = str(out_dir)
    return metrics


def format_report(metrics):
    """A human-readable summary of `evaluate`'s result."""
    n, src = metrics["n"], metrics["source"]
    what = (f"{src['run']} ({src['model']}) on {metrics['name']} [{src['data']}]"
            if src["mode"] == "model" else f"{src['scores']} with {src['protocol']}")
    tdcf = metrics["min_tdcf"]
    lines = [f"{what}: {n['total']} utterances, {n['bonafide']} bonafide, {n['spoof']} spoof",
             f"pooled EER: {metrics['eer']:.2%} (bonafide = target; score threshold "
             f"{metrics['eer_threshold']:.4g})",
             f"min t-DCF: {tdcf['min_tdcf']:.4f} (ASVspoof 2019 cost model)"
             if tdcf["min_tdcf"] is not None else f"min t-DCF: {tdcf['reason']}",
             f"ROC AUC: {metrics['roc_auc']:.4f}", "", "per attack (EER vs all bonafide; "
             "detected = share called spoof at the chosen threshold):",
             f"{'attack':>12s} {'n':>6s} {'EER':>8s} {'detected':>9s} {'min t-DCF':>10s}"]
    for r in metrics["per_attack"]:
        eer = f"{r['eer']:.2%}" if r["eer"] is not None else "-"
        td = f"{r['min_tdcf']:.4f}" if r["min_tdcf"] is not None else "-"
        lines.append(f"{r['attack']:>12s} {r['n']:6d} {eer:>8s} {r['detected']:9.3f} {td:>10s}")
    hdr = (f"{'point':>10s} {'P(spoof)>=':>10s} {'score<=':>9s} {'acc':>6s} {'prec':>6s} "
           f"{'recall':>6s} {'F1':>6s}")
    thr = metrics["threshold"]
    lines += ["", f"operating points (positive class = spoof; chosen = {thr['value']:.4g}, "
                  f"{thr['source']}; best_f1 and eer are picked on this data itself, "
                  "for reference only):", hdr]
    for key, m in metrics["operating_points"].items():
        lines.append(f"{key:>10s} {m['threshold']:10.4g} {m['score_threshold']:9.4g} "
                     f"{m['accuracy']:6.3f} {m['precision']:6.3f} {m['recall']:6.3f} "
                     f"{m['f1']:6.3f}")
    lines += ["", "threshold sweep (every 0.1; all 99 thresholds in thresholds.csv):",
              f"{'P(spoof)>=':>10s} {'acc':>6s} {'prec':>6s} {'recall':>6s} {'F1':>6s}"]
    for m in metrics["sweep"]:
        if round(m["threshold"] * 100) % 10 == 0:
            lines.append(f"{m['threshold']:10.2f} {m['accuracy']:6.3f} {m['precision']:6.3f} "
                         f"{m['recall']:6.3f} {m['f1']:6.3f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Evaluate a run (or a score file): EER, min t-DCF, per-attack EER, ROC AUC, "
                    "and accuracy/precision/recall/F1 (positive class = spoof) over thresholds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--run", help="run folder from train.py (default: the newest under runs/)")
    ap.add_argument("--data", help="preprocessed folder to evaluate (default: the run's held-out "
                                   "validation part)")
    ap.add_argument("--model", choices=("best", "final"), default="best",
                    help="best.keras (best validation --monitor of train.py, by default the "
                         "lowest loss) or model.keras (last epoch)")
    ap.add_argument("--scores", help="evaluate this score file ('utt_id score', higher = more "
                                     "bonafide) instead of a model; needs --protocol")
    ap.add_argument("--protocol", help="protocol/key file giving the labels and attacks of "
                                       "--scores (any format preprocess.py reads)")
    ap.add_argument("--format", choices=preprocess.FORMATS,
                    help="format of --protocol (default: detected)")
    ap.add_argument("--asv-scores", help="ASVspoof 2019 ASV score file "
                                         "(ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt) "
                                         "for the min t-DCF")
    ap.add_argument("--threshold", type=float,
                    help="operating point on P(spoof) for predictions.csv, per-attack detection "
                         "and the confusion matrix (default: the run's calibrated threshold, "
                         "else 0.5); metrics at 0.5 and at the calibrated threshold are always "
                         "reported")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="prediction batch size")
    ap.add_argument("--name", help="output subfolder under <run>/eval/ (default: 'heldout' or the "
                                   "data folder's name)")
    ap.add_argument("--out", help="output folder (default: <run>/eval/<name>, or "
                                  "<scores>_eval/ beside a score file)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = ap.parse_args(argv)
    if args.threshold is not None and not 0 < args.threshold < 1:
        ap.error("--threshold must be in (0, 1)")
    try:
        run_dir = None
        if args.scores is None:
            run_dir = Path(args.run) if args.run else find_latest_run()
        metrics = evaluate(run_dir, args.data, args.model, args.threshold, args.batch_size,
                           args.name, args.scores, args.protocol, args.format, args.asv_scores,
                           args.out, not args.no_plots)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    for w in metrics["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(format_report(metrics))
    print(f"\nwritten to {metrics['out_dir']}/: {', '.join(metrics['files'])}")
    return metrics


if __name__ == "__main__":
    main()
