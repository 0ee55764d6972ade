"""How unlike its training recordings a recording is, for a detector that should say "I do not
know" instead of a confident wrong verdict.

A detector's verdict is a linear read-out of its last hidden layer (`models.logit_parts`: the
vector the final Dense(1, sigmoid) reads). A recording whose vector lies far from where the
training recordings put theirs is of a kind the detector never learned; its P(spoof) there
means little, however close to 0 or 1. The distance used is Mahalanobis' to the training
vectors (mean and a Ledoit-Wolf shrunk covariance, scikit-learn), per scored window; a file's
**unfamiliarity** is the mean over its windows divided by a threshold chosen on development
data: the `QUANTILE` of the distances of held-out recordings of the training kind (the run's
validation part), so that about 1 in 100 of those is called unfamiliar. Above 1 the verdict is
shown as UNCERTAIN, "unlike the recordings this detector was trained on".

The fit is stored in the run folder (`FILE`: the mean, the precision matrix and the threshold,
with the model file's size and time it was fitted for; a model trained again makes it stale,
and it is then ignored with a warning). ``scripts/fit_familiarity.py`` makes it.
"""

import json
from pathlib import Path

import numpy as np

# -----------------------------------------------------------------------------
FILE = "familiarity.npz"
QUANTILE = 0.99  # of the development distances: the threshold of "unfamiliar"
# -----------------------------------------------------------------------------


def fit(train_hidden, dev_hidden, quantile=QUANTILE):
    """Fit the reference distribution and its threshold.

    Parameters
    ----------
    train_hidden : array, shape (n_train, d)
        Hidden vectors of training recordings (windows).
    dev_hidden : array, shape (n_dev, d)
        Hidden vectors of held-out recordings of the same kind.
    quantile : float in (0, 1)

    Returns
    -------
    fitted : dict
        ``mean`` (d,), ``precision`` (d, d), ``threshold`` (a distance), ``quantile``,
        ``n_train``, ``n_dev``.
    """
    from sklearn.covariance import LedoitWolf

    x, dev = np.asarray(train_hidden, np.float64), np.asarray(dev_hidden, np.float64)
    if x.ndim != 2 or dev.ndim != 2 or x.shape[1] != dev.shape[1]:
        raise ValueError(f"hidden vectors of shapes {x.shape} and {dev.shape}: expected (n, d) "
                         "twice with the same d")
    if len(x) < 2 or len(dev) < 1:
        raise ValueError(f"{len(x)} training and {len(dev)} development vectors: too few")
    if not (np.isfinite(x).all() and np.isfinite(dev).all()):
        raise ValueError("hidden vectors must be finite")
    lw = LedoitWolf().fit(x)
    fitted = {"mean": lw.location_, "precision": lw.precision_}
    d = distances(fitted, dev)
    fitted.update(threshold=float(max(np.quantile(d, quantile), 1e-12)),
                  quantile=float(quantile), n_train=len(x), n_dev=len(dev))
    return fitted


def distances(fitted, hidden):
    """Mahalanobis distance of each row of ``hidden`` (n, d') to the reference: (n,). A
    reference of d <= d' features reads the first d (a fused run's last layer takes the
    encoder's embedding followed by the fused logit: the reference is the embedding's)."""
    h = np.asarray(hidden, np.float64)[:, :len(fitted["mean"])] - fitted["mean"]
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", h, fitted["precision"], h), 0.0))


def model_stamp(model_path):
    """What identifies the model a fit belongs to: its file's size and modification time."""
    st = Path(model_path).stat()
    return {"model": Path(model_path).name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def save(run_dir, fitted, model_path, info):
    """Write `FILE` into ``run_dir`` (atomically), with ``info`` (what it was fitted on) and the
    model's stamp."""
    from .atomic import atomic_output

    record = {**info, **model_stamp(model_path), "threshold": fitted["threshold"],
              "quantile": fitted["quantile"], "n_train": fitted["n_train"],
              "n_dev": fitted["n_dev"]}
    with atomic_output(Path(run_dir) / FILE, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, mean=fitted["mean"], precision=fitted["precision"],
                 record=np.array(json.dumps(record)))
    return record


def load(run_dir, model_path):
    """The fit of ``run_dir`` for ``model_path``, or None (none, or stale: a warning).

    Returns
    -------
    fitted : dict or None
        As `fit`, plus ``record``.
    problem : str or None
        Why a file that exists is not used.
    """
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as z:
            record = json.loads(str(z["record"]))
            fitted = {"mean": np.array(z["mean"], np.float64),
                      "precision": np.array(z["precision"], np.float64),
                      "threshold": float(record["threshold"]), "record": record}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"{path}: unreadable ({type(e).__name__}); not used"
    stamp = model_stamp(model_path)
    if {k: record.get(k) for k in stamp} != stamp:
        return None, (f"{path} was fitted for another {stamp['model']} (trained again since?); "
                      "not used: run scripts/fit_familiarity.py again")
    d = fitted["mean"].size
    if fitted["precision"].shape != (d, d) or not np.isfinite(fitted["precision"]).all() \
            or not fitted["threshold"] > 0:
        return None, f"{path}: damaged (shapes or values); not used"
    return fitted, None


COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.5)  # shares of a test set answered, most familiar first


def selective(table, threshold, coverages=COVERAGES):
    """What abstaining on unfamiliar recordings buys (risk-coverage): the test set's most
    familiar share answered, the rest left "uncertain".

    Parameters
    ----------
    table : pandas.DataFrame
        ``label``, ``score`` (higher = more bonafide), ``p_spoof`` and ``unfamiliarity`` per
        utterance (`report.scores_from_model` of a fitted run).
    threshold : float
        The decision threshold on P(spoof) of the accuracy.

    Returns
    -------
    result : dict
        ``levels``: per coverage, ``coverage`` (share answered), ``n``, ``eer`` (None when one
        class is absent from the answered share), ``accuracy`` and ``max_unfamiliarity``;
        ``at_fit``: the same for the share with unfamiliarity at most 1 (what predict.py
        answers without UNCERTAIN).
    """
    from .evaluation.metrics import compute_eer

    t = table.sort_values("unfamiliarity", kind="stable").reset_index(drop=True)
    spoof = (t["label"] == "spoof").to_numpy()

    def level(n):
        part, s = t.iloc[:n], spoof[:n]
        eer = (float(compute_eer(part["score"].to_numpy()[~s], part["score"].to_numpy()[s])[0])
               if 0 < s.sum() < n else None)
        acc = float(np.mean((part["p_spoof"].to_numpy() >= threshold) == s)) if n else None
        return {"coverage": n / len(t), "n": int(n), "eer": eer, "accuracy": acc,
                "max_unfamiliarity": float(part["unfamiliarity"].max()) if n else None}

    levels = [level(max(1, int(round(c * len(t))))) for c in coverages]
    return {"levels": levels, "at_fit": level(int((t["unfamiliarity"] <= 1).sum()))}
