"""The evaluation plots: ROC, DET (normal-deviate axes), score histograms, the confusion matrix
at the chosen threshold, and the training curves of a run. matplotlib, no display needed."""

from pathlib import Path

import numpy as np
import pandas as pd

import protocols
from atomic import atomic_output
from metrics import det_curve

# -----------------------------------------------------------------------------
PLOTS = ("roc.png", "det.png", "score_hist.png", "confusion.png", "training_curves.png")
DPI = 100
DET_TICKS = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95])
# -----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_plot(ax, y, p, auc):
    """ROC of P(spoof), spoof = positive."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="bonafide flagged as spoof (false positive rate)",
           ylabel="spoof detected (true positive rate)", title="ROC (positive class: spoof)")
    ax.legend(loc="lower right")


def det_plot(ax, score, y, eer):
    """DET curve on normal-deviate axes, bonafide = target."""
    from scipy.stats import norm

    p_miss, p_fa, _ = det_curve(score[y == 0], score[y == 1])
    lim = 0.5 / len(y)  # rates of 0 and 1 drawn half an utterance inside the axes
    ticks = DET_TICKS[DET_TICKS >= min(lim, 0.01)]
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


def histogram_plot(ax, score, labels, eer_threshold):
    """Score distributions per class, with the EER threshold."""
    bins = np.histogram_bin_edges(score, bins=40)
    for key, color in (("bonafide", "tab:green"), ("spoof", "tab:red")):
        ax.hist(score[labels == key], bins=bins, alpha=0.6, color=color,
                label=f"{key} ({int((labels == key).sum())})", density=True)
    ax.axvline(eer_threshold, color="k", ls="--", label="EER threshold")
    ax.set(xlabel="score (log-odds of bonafide; higher = more bonafide)", ylabel="density",
           title="Score distributions")
    ax.legend()


def confusion_plot(ax, y, p, threshold):
    """Confusion matrix at ``P(spoof) >= threshold``."""
    from sklearn.metrics import ConfusionMatrixDisplay

    ConfusionMatrixDisplay.from_predictions(
        y, (p >= threshold).astype(int), labels=[0, 1],
        display_labels=["bonafide", "spoof"], ax=ax, colorbar=False)
    ax.set_title(f"P(spoof) >= {threshold:.2f}")


def training_curves(history_csv):
    """A figure of loss, accuracy and AUC per epoch (train and validation), or None."""
    h = pd.read_csv(history_csv)
    keys = [k for k in ("loss", "accuracy", "auc") if k in h]
    fig, axes = _pyplot().subplots(1, len(keys), figsize=(4 * len(keys), 3.5))
    for ax, k in zip(np.atleast_1d(axes), keys):
        ax.plot(h["epoch"] + 1, h[k], "o-", label="train")
        if f"val_{k}" in h:
            ax.plot(h["epoch"] + 1, h[f"val_{k}"], "o-", label="validation")
        ax.set(xlabel="epoch", title=k)
        ax.legend()
    return fig


def save_plots(table, report, out_dir, history_csv=None):
    """ROC, DET (normal-deviate axes), score histograms, confusion matrix at the chosen
    threshold and, when ``history_csv`` exists, the training curves.

    Parameters
    ----------
    table : pandas.DataFrame
        ``label, score, p_spoof`` per utterance (`runs.score_table`).
    report : dict
        From `report.compute_report` (``roc_auc``, ``eer``, ``eer_threshold``,
        ``operating_points``).
    out_dir : str or Path
    history_csv : str or Path, optional

    Returns
    -------
    written : list of str
        File names, in `PLOTS` order.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    y = protocols.targets(table["label"])
    labels = table["label"].to_numpy()
    score, p = table["score"].to_numpy(np.float64), table["p_spoof"].to_numpy(np.float64)
    written = []

    def save(fig, name):
        fig.tight_layout()
        with atomic_output(out_dir / name, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
        plt.close(fig)
        written.append(name)

    for name, size, draw in (
            ("roc.png", (5, 5), lambda ax: roc_plot(ax, y, p, report["roc_auc"])),
            ("det.png", (5, 5), lambda ax: det_plot(ax, score, y, report["eer"])),
            ("score_hist.png", (6, 4),
             lambda ax: histogram_plot(ax, score, labels, report["eer_threshold"])),
            ("confusion.png", (4.5, 4), lambda ax: confusion_plot(
                ax, y, p, report["operating_points"]["chosen"]["threshold"]))):
        fig, ax = plt.subplots(figsize=size)
        draw(ax)
        save(fig, name)
    if history_csv is not None and Path(history_csv).exists():
        save(training_curves(history_csv), "training_curves.png")
    return written
