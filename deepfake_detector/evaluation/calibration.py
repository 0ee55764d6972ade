"""Scores -> calibrated log-likelihood ratios, and fusion of several systems into one.

A countermeasure's score ranks utterances (higher = more bonafide) but is rarely a
log-likelihood ratio ``log p(x | bonafide) / p(x | spoof)``: the ASVspoof 5 metrics that make a
decision (actDCF) or weigh every score (Cllr) need one. The standard linear calibration
(Brümmer & du Preez, Computer Speech and Language 20, 2006; the BOSARIS toolkit) fits

    llr = w . s + b

by logistic regression on labelled scores, each class weighted to the effective prior
``PRIOR`` (so that the fit minimizes Cllr at that prior, whatever the class counts). One system:
``w`` is one positive number, the map is monotone, and EER and minDCF do not change. Several
systems (``s`` one score per system): the same fit is a fusion (the ASVspoof 5 organisers' fusion
tool does this), and its output is calibrated too.

The fitted map lives in ``calibration.json`` (a run's, per model: ``{"best": ..., "final":
...}``; or a file of its own for score files). From a calibrated score the posterior at a stated
prior follows (`posterior_logit`): ``P(spoof) = sigmoid(-llr + log(pi / (1 - pi)))``.
"""

import json
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic

# -----------------------------------------------------------------------------
PRIOR = 0.5  # effective P(bonafide) of the fit: the prior at which Cllr is defined
PRIOR_SPOOF = 0.5  # default prior of spoof for the posterior P(spoof) reported
CALIBRATION_FILE = "calibration.json"
# -----------------------------------------------------------------------------


def _logit(p):
    return float(np.log(p / (1 - p)))


def _matrix(scores):
    x = np.asarray(scores, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or not len(x):
        raise ValueError(f"expected scores of shape (n,) or (n, systems), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite (NaN or inf found)")
    return x


def fit_llr(scores, targets, prior=PRIOR):
    """Fit ``llr = w . s + b`` by prior-weighted logistic regression (scikit-learn, without a
    penalty: ``C = inf``).

    Parameters
    ----------
    scores : array, shape (n,) or (n, systems)
        Higher = more bonafide, per system.
    targets : array of {0, 1}, shape (n,)
        1 = spoof, 0 = bonafide (`protocols.targets`).
    prior : float in (0, 1)
        Effective prior of bonafide: bonafide trials weigh ``prior / n_bonafide`` in total,
        spoof trials ``(1 - prior) / n_spoof``.

    Returns
    -------
    calibration : dict
        ``weights`` (one per system), ``bias``, ``prior``, ``n_bonafide``, ``n_spoof``, and
        ``cllr_before`` (the first system's raw scores) and ``cllr_after`` on these data.
    """
    from sklearn.linear_model import LogisticRegression

    from .metrics import cllr

    x, t = _matrix(scores), np.asarray(targets).astype(int).ravel()
    if len(t) != len(x):
        raise ValueError(f"{len(x)} scores but {len(t)} labels")
    n_bona, n_spoof = int((t == 0).sum()), int((t == 1).sum())
    if not n_bona or not n_spoof:
        raise ValueError(f"calibration needs bonafide and spoof trials, got {n_bona} bonafide "
                         f"and {n_spoof} spoof")
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    bona = t == 0
    weight = np.where(bona, prior / n_bona, (1 - prior) / n_spoof) * len(t)
    # each system's scores divided by their largest magnitude: the solver works on numbers
    # near 1 whatever the scores' scale (scores of 1e300 stopped it at iteration 0 with all
    # weights 0), and the weights are scaled back
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000)
    fit.fit(x / scale, bona.astype(int), sample_weight=weight)
    weights = fit.coef_[0] / scale
    if not np.isfinite([*weights, fit.intercept_[0]]).all() or not np.any(weights):
        raise ValueError(f"the calibration fit failed (weights {list(weights)}, bias "
                         f"{fit.intercept_[0]:.4g} after {int(fit.n_iter_[0])} iterations): "
                         "the scores carry no usable information, or are of a scale the "
                         "solver cannot use; nothing was written")
    # the fitted log-odds are posterior log-odds at the effective prior: remove it
    cal = {"weights": [float(w) for w in weights],
           "bias": float(fit.intercept_[0]) - _logit(prior), "prior": float(prior),
           "n_bonafide": n_bona, "n_spoof": n_spoof}
    llr = apply_llr(cal, x)
    cal["cllr_before"] = cllr(x[bona, 0], x[~bona, 0])
    cal["cllr_after"] = cllr(llr[bona], llr[~bona])
    if llr[bona].min() > llr[~bona].max():  # the likelihood has no finite optimum
        cal["warning"] = (f"the calibration data are perfectly separated ({n_bona} bonafide "
                          f"above all {n_spoof} spoof): the fit has no finite optimum, so the "
                          "map's scale is where the solver stopped; calibrate on data with "
                          "errors (more, or harder, utterances)")
    return cal


def apply_llr(calibration, scores):
    """Calibrated log-likelihood ratios of ``scores`` (shape (n,) or (n, systems)) -> (n,)."""
    x = _matrix(scores)
    w = np.asarray(calibration["weights"], dtype=np.float64)
    if x.shape[1] != len(w):
        raise ValueError(f"the calibration has {len(w)} system weights, the scores "
                         f"{x.shape[1]} columns")
    return x @ w + float(calibration["bias"])


def posterior_logit(llr, prior_spoof=PRIOR_SPOOF):
    """Log-odds of spoof after an LLR (bonafide vs spoof) at prior ``prior_spoof``:
    ``-llr + log(pi / (1 - pi))``; P(spoof) is its sigmoid."""
    return -np.asarray(llr, dtype=np.float64) + _logit(prior_spoof)


def check_calibration(cal, where, systems=1):
    """Refuse a calibration that cannot be applied: wrong fields, non-finite numbers, a
    number of systems other than ``systems``, or (one system) a slope that is not positive,
    which would turn the ranking around."""
    try:
        w = [float(v) for v in cal["weights"]]
        b, prior = float(cal["bias"]), float(cal.get("prior_spoof", PRIOR_SPOOF))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: not a calibration (expected 'weights' and 'bias')") from None
    if not np.isfinite([*w, b, prior]).all() or not 0 < prior < 1:
        raise ValueError(f"{where}: calibration numbers must be finite, prior_spoof in (0, 1)")
    if len(w) != systems:
        raise ValueError(f"{where}: a calibration of {len(w)} systems, expected {systems}")
    if systems == 1 and w[0] == 0:
        raise ValueError(f"{where}: the calibration's slope is 0: the scores carry no usable "
                         "information (or the fit failed); not applied")
    if systems == 1 and w[0] < 0:
        raise ValueError(f"{where}: the calibration's slope is {w[0]:.4g}: on its data "
                         "bonafide scored lower than spoof; check their labels")
    return cal


def read_calibration(path, which=None):
    """A saved calibration: ``path`` is a ``calibration.json`` file, or a run folder whose
    file holds one per model (``which``, default "best"). None when a run has none."""
    path = Path(path)
    file = path / CALIBRATION_FILE if path.is_dir() else path
    if not file.exists():
        if path.is_dir():
            return None
        raise FileNotFoundError(f"calibration file {file} not found")
    try:
        saved = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not readable JSON ({e})") from None
    if path.is_dir():
        saved = saved.get(which or "best") if isinstance(saved, dict) else None
        if saved is None:
            return None
    return check_calibration(saved, file)


def write_run_calibration(run_dir, which, cal):
    """Save ``cal`` as model ``which``'s calibration in ``run_dir/calibration.json``
    (atomically; the other model's entry is kept)."""
    file = Path(run_dir) / CALIBRATION_FILE
    saved = json.loads(file.read_text()) if file.exists() else {}
    write_json_atomic(file, {**saved, which: cal})
    return file


def translate_threshold(saved, cal):
    """A run's calibrated decision threshold (``threshold.json``: ``score_threshold`` on the raw
    score, ``threshold`` on the raw P(spoof)) moved to the calibrated scale: the same decisions,
    the LLR and posterior P(spoof) they happen at."""
    if saved is None:
        return None
    t = float(apply_llr(cal, [saved["score_threshold"]])[0])
    z = float(posterior_logit(t, cal.get("prior_spoof", PRIOR_SPOOF)))
    return {**saved, "score_threshold": t, "threshold": float(1 / (1 + np.exp(-z))),
            "raw": {"score_threshold": saved["score_threshold"],
                    "threshold": saved["threshold"]}}
