"""Detection metrics: the ASVspoof ones (DET curve, EER, min t-DCF; ASVspoof 5's minDCF, actDCF
and Cllr), threshold calibration, and the design card's accuracy, precision, recall and F1.
numpy, scipy and scikit-learn only.

Class roles (also in docs/metrics.md):

- **EER, min t-DCF, minDCF, actDCF, Cllr** take bonafide as the target class (ASVspoof
  evaluation plans): a countermeasure score is higher for bonafide, and an utterance is
  accepted when ``score >= t``. They are computed exactly as the ASVspoof evaluation packages
  define them (`det_points`, `compute_eer`, `min_tdcf`, `min_dcf`, `act_dcf`, `cllr`); the
  thresholds used for decisions are reachable ones (`det_curve`, `eer_point`).
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
# ASVspoof 5 Track 1 DCF cost model (evaluation plan; the organisers' evaluation package)
COST_5 = {"p_spoof": 0.05, "c_miss": 1.0, "c_fa": 10.0}
# -----------------------------------------------------------------------------


def sigmoid(z):
    """Numerically stable logistic function."""
    from scipy.special import expit

    return expit(z)


# ----------------------------------------------------------------------------- ASVspoof


def _scores(bonafide, spoof):
    bonafide = np.asarray(bonafide, dtype=np.float64).ravel()
    spoof = np.asarray(spoof, dtype=np.float64).ravel()
    if bonafide.size == 0 or spoof.size == 0:
        raise ValueError(f"a DET curve needs bonafide and spoof scores, got {bonafide.size} "
                         f"bonafide and {spoof.size} spoof")
    return bonafide, spoof


def det_points(bonafide, spoof):
    """Every point of the DET curve as the ASVspoof evaluation plan and packages define it.

    The trials are sorted by score, tied trials bonafide first (the packages' stable sort of
    bonafide scores followed by spoof scores); point ``k`` (0 to n) rejects the ``k`` lowest.
    So each trial is one step, even inside a group of tied scores: with ties, some points
    cannot be reached by any threshold (see `det_curve` for the reachable ones).

    Parameters
    ----------
    bonafide, spoof : array, shape (n_bonafide,), (n_spoof,)
        Scores, higher = more bonafide.

    Returns
    -------
    p_miss, p_fa, thresholds : np.ndarray, shape (n + 1,)
        ``p_miss[k]`` = bonafide among the k lowest / n_bonafide; ``p_fa[k]`` = (n_spoof - spoof
        among the k lowest) / n_spoof, written so that the values are bit for bit the
        packages'; ``thresholds[k]`` the score of the k-th lowest trial (the last one rejected;
        ``thresholds[0]`` = the lowest score - 0.001, as in the packages).
    """
    bonafide, spoof = _scores(bonafide, spoof)
    scores = np.concatenate([bonafide, spoof])
    order = np.argsort(scores, kind="stable")
    is_bona = np.concatenate([np.ones(bonafide.size), np.zeros(spoof.size)])[order]
    k_bona = np.concatenate([[0], np.cumsum(is_bona)])
    k_spoof = np.arange(scores.size + 1) - k_bona
    p_miss = k_bona / bonafide.size
    p_fa = (spoof.size - k_spoof) / spoof.size
    thresholds = np.concatenate([[scores[order[0]] - 0.001], scores[order]])
    return p_miss, p_fa, thresholds


def det_curve(bonafide, spoof):
    """The DET points a decision threshold can reach: accept as bonafide when ``score >= t``,
    for every distinct score ``t`` and +inf (tied scores are never split).

    A miss is a rejected bonafide utterance, a false alarm an accepted spoof. On tie-free
    scores these are exactly the points of `det_points`; with ties, `det_points` also has the
    unreachable points inside each group of tied scores.

    Parameters
    ----------
    bonafide, spoof : array, shape (n_bonafide,), (n_spoof,)
        Scores, higher = more bonafide.

    Returns
    -------
    p_miss, p_fa, thresholds : np.ndarray, shape (n_thresholds,)
        ``p_miss`` rises from 0 to 1 and ``p_fa`` falls from 1 to 0 as ``thresholds`` increase.
    """
    bonafide, spoof = (np.sort(x) for x in _scores(bonafide, spoof))
    thresholds = np.append(np.unique(np.concatenate([bonafide, spoof])), np.inf)
    p_miss = np.searchsorted(bonafide, thresholds, side="left") / bonafide.size  # bona < t
    # (n - k) / n, not 1 - k / n: the same rounding as det_points and the packages
    p_fa = (spoof.size - np.searchsorted(spoof, thresholds, side="left")) / spoof.size
    return p_miss, p_fa, thresholds


def compute_eer(bonafide, spoof):
    """Equal error rate, bonafide as target: the ASVspoof definition, bit for bit.

    On the DET points of `det_points` (every trial a step, ties bonafide first), the point
    where the miss and false-alarm rates are closest (the first such point when two are equally
    close), and the mean of its two rates (ASVspoof 2019 evaluation plan; ``compute_eer`` of
    the ASVspoof 2019 and 2021 evaluation packages). Like any rank-based measure it is
    invariant to strictly increasing transforms of the scores. With ties the point may lie
    inside a group of tied scores: all-equal scores give 100% (the bonafide of the group are
    rejected first), as in the packages.

    Returns
    -------
    eer : float in [0, 1]
    threshold : float
        As the packages return it: the score of the last trial rejected at that point (the
        lowest score - 0.001 when none is). The reachable threshold nearest the EER, for
        decisions, is `eer_point`.
    """
    p_miss, p_fa, thresholds = det_points(bonafide, spoof)
    i = int(np.argmin(np.abs(p_miss - p_fa)))
    return float(np.mean((p_miss[i], p_fa[i]))), float(thresholds[i])


def eer_point(bonafide, spoof):
    """The reachable operating point nearest the EER: on `det_curve`, where the miss and
    false-alarm rates are closest (the first such point). On tie-free scores it is the point
    `compute_eer` takes.

    Returns
    -------
    threshold : float
        Accept as bonafide when ``score >= threshold``.
    p_miss, p_fa : float
        The rates there.
    """
    p_miss, p_fa, thresholds = det_curve(bonafide, spoof)
    i = int(np.argmin(np.abs(p_miss - p_fa)))
    return float(thresholds[i]), float(p_miss[i]), float(p_fa[i])


def asv_operating_point(asv):
    """The ASV system's error rates at its EER threshold, as the ASVspoof 2019 t-DCF code takes
    them: the threshold is the one `compute_eer` returns for target vs nontarget scores, and a
    trial is accepted when its score is at or above it (so the rates are those of the DET point
    one trial before the EER point).

    Returns
    -------
    rates : dict
        ``asv_eer``, ``asv_threshold``, ``p_fa_asv`` (nontargets accepted), ``p_miss_asv``
        (targets rejected), ``p_miss_spoof_asv`` (spoofs rejected; None without spoof trials).
    """
    tar = asv.loc[asv["key"] == "target", "score"].to_numpy(np.float64)
    non = asv.loc[asv["key"] == "nontarget", "score"].to_numpy(np.float64)
    spoof = asv.loc[asv["key"] == "spoof", "score"].to_numpy(np.float64)
    eer, thr = compute_eer(tar, non)  # target speakers play the "bonafide" role here
    return {"asv_eer": eer, "asv_threshold": thr,
            "p_fa_asv": float(np.sum(non >= thr) / non.size),
            "p_miss_asv": float(np.sum(tar < thr) / tar.size),
            "p_miss_spoof_asv": float(np.sum(spoof < thr) / spoof.size) if spoof.size else None}


def min_tdcf(bonafide, spoof, asv, cost=COST_2019):
    """Normalized minimum tandem detection cost function, ASVspoof 2019 definition.

    t-DCF(t) = C1 * P_miss_cm(t) + C2 * P_fa_cm(t), normalized by min(C1, C2), with
    C1 = P_tar (C_miss_cm - C_miss_asv P_miss_asv) - P_non C_fa_asv P_fa_asv and
    C2 = C_fa_cm P_spoof (1 - P_miss_spoof_asv) (ASVspoof 2019 evaluation plan, Sec. 3; Kinnunen
    et al., "Tandem assessment of spoofing countermeasures and automatic speaker verification",
    IEEE/ACM TASLP 2020); the ASV rates at the ASV's EER threshold as the official code takes
    them (`asv_operating_point`), the CM rates at every point of `det_points`.

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
        ``min_tdcf`` (None when undefined, with ``reason``: C1 or C2 is not positive, e.g. an
        attack whose every spoof the ASV rejects has C2 = 0), its CM ``threshold`` (the last
        score rejected, as `compute_eer`'s), the ASV rates of `asv_operating_point`, ``c1``,
        ``c2``.
    """
    rates = asv_operating_point(asv)
    if rates["p_miss_spoof_asv"] is None:
        return {"min_tdcf": None, "reason": "undefined: no ASV scores of spoof trials", **rates}
    c = cost
    c1 = c["p_tar"] * (c["c_miss_cm"] - c["c_miss_asv"] * rates["p_miss_asv"]) \
        - c["p_non"] * c["c_fa_asv"] * rates["p_fa_asv"]
    c2 = c["c_fa_cm"] * c["p_spoof"] * (1 - rates["p_miss_spoof_asv"])
    out = {**rates, "c1": float(c1), "c2": float(c2)}
    if c1 <= 0 or c2 <= 0:
        why = ("the ASV rejects every spoof trial (C2 = 0): the countermeasure cannot lower the "
               "cost" if c2 <= 0 else f"the ASV error rates make C1 = {c1:.4g} not positive")
        return {"min_tdcf": None, "threshold": None, "reason": f"undefined: {why}", **out}
    p_miss, p_fa, thresholds = det_points(bonafide, spoof)
    tdcf = (c1 * p_miss + c2 * p_fa) / np.minimum(c1, c2)
    i = int(np.argmin(tdcf))
    return {"min_tdcf": float(tdcf[i]), "threshold": float(thresholds[i]), **out}


def min_dcf(bonafide, spoof, cost=COST_5):
    """Normalized minimum detection cost, ASVspoof 5 Track 1 (the primary metric).

    min over the DET points of `det_points` (the ones the EER uses) of
    ``(C_miss P_miss (1 - pi) + C_fa P_fa pi) / min(C_miss (1 - pi), C_fa pi)``, pi = P_spoof
    (ASVspoof 5 evaluation plan; ``compute_mindcf`` of its evaluation package, whose order of
    floating-point operations is kept: the target prior is ``1 - pi`` and the spoof prior
    ``1 - (1 - pi)``).

    Returns
    -------
    min_dcf : float
    threshold : float
        The score of the last trial rejected at that point (as `compute_eer`'s).
    """
    p_miss, p_fa, thresholds = det_points(bonafide, spoof)
    p_tar = 1 - cost["p_spoof"]
    c_det = cost["c_miss"] * p_miss * p_tar + cost["c_fa"] * p_fa * (1 - p_tar)
    i = int(np.argmin(c_det))
    norm = min(cost["c_miss"] * p_tar, cost["c_fa"] * (1 - p_tar))
    return float(c_det[i] / norm), float(thresholds[i])


def bayes_threshold(cost=COST_5):
    """The LLR threshold of the Bayes decision for ``cost``: ``-log(beta)``, ``beta = C_miss
    (1 - pi) / (C_fa pi)`` (ASVspoof 5 evaluation plan, eq. 3): ``-log(0.95 / 0.5)`` =
    -0.642 with the default costs."""
    return float(-np.log(cost["c_miss"] * (1 - cost["p_spoof"])
                         / (cost["c_fa"] * cost["p_spoof"])))


def act_dcf(bonafide, spoof, cost=COST_5):
    """Normalized actual detection cost, ASVspoof 5: the cost of deciding at the Bayes
    threshold `bayes_threshold`, as if the scores were log-likelihood ratios (bonafide vs
    spoof). A bonafide score ``< threshold`` is a miss, a spoof score ``>= threshold`` a false
    alarm (``compute_actDCF`` of the ASVspoof 5 package). Meaningful only for calibrated LLRs:
    on other scores it measures how far they are from being LLRs.

    Returns
    -------
    act_dcf : float
    threshold : float
    """
    bonafide, spoof = _scores(bonafide, spoof)
    t = bayes_threshold(cost)
    p = cost["p_spoof"]
    miss = np.sum(bonafide < t) / bonafide.size
    fa = np.sum(spoof >= t) / spoof.size
    dcf = cost["c_miss"] * (1 - p) * miss + cost["c_fa"] * p * fa
    return float(dcf / np.min([cost["c_fa"] * p, cost["c_miss"] * (1 - p)])), t


def cllr(bonafide, spoof):
    """Log-likelihood-ratio cost in bits: ``0.5 (mean log(1 + exp(-s_bonafide)) + mean
    log(1 + exp(s_spoof))) / log 2`` (Brümmer & du Preez, Computer Speech and Language 20,
    2006; ``calculate_CLLR`` of the ASVspoof 5 package). 0 for perfect, confident LLRs, 1 for
    a system that always says 0; above 1 for scores that are not calibrated LLRs. Computed as
    ``logaddexp(0, -s)``, equal to the package's ``log1p(exp(-s))`` to rounding, and finite
    where that overflows (scores below about -709).
    """
    bonafide, spoof = _scores(bonafide, spoof)
    return float(0.5 * (np.mean(np.logaddexp(0, -bonafide)) + np.mean(np.logaddexp(0, spoof)))
                 / np.log(2))


def asvspoof5_metrics(bonafide, spoof, cost=COST_5):
    """The ASVspoof 5 Track 1 numbers of one score set: ``min_dcf`` (primary), ``act_dcf``,
    ``cllr``, ``eer``, with the thresholds."""
    mdcf, mthr = min_dcf(bonafide, spoof, cost)
    adcf, athr = act_dcf(bonafide, spoof, cost)
    eer, _ = compute_eer(bonafide, spoof)
    return {"min_dcf": mdcf, "min_dcf_threshold": mthr, "act_dcf": adcf,
            "act_dcf_threshold": athr, "cllr": cllr(bonafide, spoof), "eer": eer}


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
        ``eer``: the reachable point nearest the EER (`eer_point`: where the share of bonafide
        flagged and the share of spoofs missed are closest; on tie-free scores the point of
        `compute_eer`). ``f1``: the highest F1 over every
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
    p_miss, p_fa, thresholds = det_curve(bona, spoof)  # reachable points: bonafide if >= t
    if method == "eer":  # as `eer_point`
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
