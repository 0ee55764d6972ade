"""Detection metrics: the ASVspoof ones (DET curve, EER, min t-DCF), threshold calibration, and
the design card's accuracy, precision, recall and F1. numpy, scipy and scikit-learn only.

Class roles (also in docs/metrics.md):

- **EER and min t-DCF** take bonafide as the target class (ASVspoof 2019 evaluation plan): a
  countermeasure score is higher for bonafide, and an utterance is accepted when ``score >= t``.
- **precision, recall, F1** take **spoof** as the positive class: spoof when
  ``P(spoof) >= threshold``.
"""

import numpy as np
import pandas as pd

# -----------------------------------------------------------------------------
THRESHOLD = 0.5  # the design card's decision threshold on P(spoof)
SWEEP = np.round(np.arange(0.01, 1.0, 0.01), 2)  # P(spoof) thresholds of the sweep
# ASVspoof 2019 t-DCF cost model (evaluation plan, Table 4; Kinnunen et al., IEEE/ACM TASLP 2020)
COST_2019 = {"p_spoof": 0.05, "p_tar": (1 - 0.05) * 0.99, "p_non": (1 - 0.05) * 0.01,
             "c_miss_asv": 1.0, "c_fa_asv": 10.0, "c_miss_cm": 1.0, "c_fa_cm": 10.0}
# -----------------------------------------------------------------------------


def sigmoid(z):
    """Numerically stable logistic function."""
    from scipy.special import expit

    return expit(z)


# ----------------------------------------------------------------------------- ASVspoof


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
        ASV scores (`protocols.read_asv_scores`): ``key`` target/nontarget/spoof and ``score``.
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
