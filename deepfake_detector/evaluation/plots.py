"""The evaluation plots: ROC, DET (normal-deviate axes), score histograms, the confusion matrix
at the chosen threshold, and the training curves of a run. matplotlib, no display needed.

Every axis stays readable whatever the scores' range: at most a handful of ticks, an offset or
scientific notation when the values are packed (a random backbone's scores all sit within
1e-5 of one value), DET ticks spaced on the normal-deviate scale, and thresholds printed with
the digits that tell them from 0.5 (`display.format_threshold`). tests/test_plots.py checks that
no two tick labels overlap, for packed and for wide scores.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from .. import protocols
from ..atomic import atomic_output
from ..display import format_threshold
from .metrics import det_curve

# -----------------------------------------------------------------------------
PLOTS = ("roc.png", "det.png", "score_hist.png", "confusion.png", "training_curves.png")
DPI = 100
DET_TICKS = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9,
                      0.95, 0.98, 0.99])
DET_SPACING = 0.5  # least distance between two DET ticks, in normal deviates
MAX_TICKS = 5
# -----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def readable_axis(axis, offset=True):
    """At most `MAX_TICKS` ticks, with an offset and scientific notation when the values are
    packed (``offset``), or plain numbers with as many digits as they need."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    axis.set_major_locator(MaxNLocator(MAX_TICKS))
    formatter = ScalarFormatter(useOffset=offset, useMathText=True)
    formatter.set_powerlimits((-3, 4))
    axis.set_major_formatter(formatter)


def titled(title, name=""):
    """A plot title with the data it is about on a second line (e.g. ``demo_dev``)."""
    return f"{title}\n{name}" if name else title


def roc_plot(ax, y, p, auc, name=""):
    """ROC of P(spoof), spoof = positive."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="bonafide flagged as spoof (false positive rate)",
           ylabel="spoof detected (true positive rate)",
           title=titled("ROC (positive class: spoof)", name))
    ax.legend(loc="lower right")


def det_ticks(low):
    """DET tick rates from ``low`` up, at least `DET_SPACING` apart on the probit scale."""
    from scipy.stats import norm

    chosen = []
    for t in DET_TICKS[(DET_TICKS >= low) & (DET_TICKS <= 1 - low)]:
        if not chosen or norm.ppf(t) - norm.ppf(chosen[-1]) >= DET_SPACING:
            chosen.append(t)
    return np.array(chosen)


def det_plot(ax, score, y, eer, name=""):
    """DET curve on normal-deviate axes, bonafide = target."""
    from scipy.stats import norm

    p_miss, p_fa, _ = det_curve(score[y == 0], score[y == 1])
    lim = 0.5 / len(y)  # rates of 0 and 1 drawn half an utterance inside the axes
    low = min(lim, 0.01)
    ticks = det_ticks(low)
    ax.plot(norm.ppf(np.clip(p_fa, lim, 1 - lim)), norm.ppf(np.clip(p_miss, lim, 1 - lim)))
    e = norm.ppf(np.clip(eer, lim, 1 - lim))
    ax.plot([e], [e], "o", label=f"EER = {eer:.2%}")
    ax.plot(norm.ppf([lim, 1 - lim]), norm.ppf([lim, 1 - lim]), ":", color="grey")
    labels = [f"{100 * t:g}%" for t in ticks]
    ax.set_xticks(norm.ppf(ticks), labels, rotation=45)
    ax.set_yticks(norm.ppf(ticks), labels)
    ax.set_xlim(norm.ppf([low, 1 - lim]))
    ax.set_ylim(norm.ppf([low, 1 - lim]))
    ax.set(xlabel="false alarm rate (spoof accepted)", ylabel="miss rate (bonafide rejected)",
           title=titled("DET (bonafide = target)", name))
    ax.legend(loc="upper right")


def threshold_bins(score, threshold, n=40):
    """About ``n`` equal bins over ``score`` with ``threshold`` on a bin edge, so that no bar
    straddles the threshold line (a bonafide utterance above it never seems to sit below)."""
    lo, hi = float(np.min(score)), float(np.max(score))
    width = (hi - lo) / n if hi > lo else 1.0
    first = threshold - np.ceil((threshold - lo) / width) * width
    last = threshold + np.ceil((hi - threshold) / width) * width
    return np.arange(round((last - first) / width) + 1) * width + first


def decision_score(score, p, threshold):
    """The score at which ``P(spoof) = threshold``, from the table's own relation between them
    (``score = -logit(p) + c``, ``c`` the prior's log-odds of a calibrated run, else 0)."""
    from scipy.special import logit

    inside = (p > 0) & (p < 1) & np.isfinite(score)
    c = float(np.median(score[inside] + logit(p[inside]))) if inside.any() else 0.0
    return float(-logit(np.clip(threshold, 1e-15, 1 - 1e-15)) + c)


def threshold_kind(source):
    """Where a decision threshold came from, in a few words (titles and legends)."""
    return ("calibrated" if source.startswith("calibrated") else
            "--threshold" if source.startswith("--threshold") else
            "the model's own decision" if source.startswith("the model's own") else
            "fused decision" if source.startswith("the fused") else "default, not calibrated")


def histogram_plot(ax, score, labels, eer_threshold, name="", decision=None):
    """Score distributions per class (each class's share of its utterances per bin), with the
    decision threshold that confusion.png counts at (``decision``: its score and kind; on a bin
    edge, `threshold_bins`) and this data's own EER point (dotted): they differ unless the
    threshold was chosen on this very data."""
    edge = decision[0] if decision else eer_threshold
    bins = threshold_bins(score, edge)
    for key, color in (("bonafide", "tab:green"), ("spoof", "tab:red")):
        s = score[labels == key]
        ax.hist(s, bins=bins, alpha=0.6, color=color, label=f"{key} ({len(s)})",
                weights=np.full(len(s), 1 / max(len(s), 1)))
    if decision:
        ax.axvline(decision[0], color="k", ls="--",
                   label=f"decision threshold ({decision[1]}; confusion.png)")
    ax.axvline(eer_threshold, color="0.4", ls=":", label="EER point of this data")
    readable_axis(ax.xaxis)
    ax.set(xlabel="score (higher = more bonafide)",
           ylabel="share of the class", title=titled("Score distributions", name))
    ax.legend(fontsize="small")


def confusion_plot(ax, y, p, threshold, name="", source=""):
    """Confusion matrix at ``P(spoof) >= threshold``, the threshold in the title as used, with
    where it came from (calibrated on the validation part, --threshold, or the default)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    ConfusionMatrixDisplay.from_predictions(
        y, (p >= threshold).astype(int), labels=[0, 1],
        display_labels=["bonafide", "spoof"], ax=ax, colorbar=False)
    kind = threshold_kind(source)
    ax.set_title(titled(f"P(spoof) >= {format_threshold(threshold)} ({kind})", name))


CURVES = (("loss", "loss"), ("accuracy", "accuracy"), ("eer", "EER (validation, %)"),
          ("auc", "ROC AUC (validation, rank-based)"))
PERCENT = {"eer"}  # panels drawn in %, as every report prints the EER


def training_curves(history_csv):
    """A figure of loss, accuracy, EER and AUC per epoch (train and validation where logged)."""
    h = pd.read_csv(history_csv)
    panels = [(k, title) for k, title in CURVES if k in h or f"val_{k}" in h]
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(4 * len(panels), 3.5))
    for ax, (k, title) in zip(np.atleast_1d(axes), panels):
        scale = 100.0 if k in PERCENT else 1.0
        if k in h:
            ax.plot(h["epoch"] + 1, h[k] * scale, "o-", label="train")
        if f"val_{k}" in h:
            ax.plot(h["epoch"] + 1, h[f"val_{k}"] * scale, "o-", label="validation")
        readable_axis(ax.yaxis, offset=False)
        readable_axis(ax.xaxis, offset=False)
        ax.set(xlabel="epoch", title=title)
        ax.legend()
    return fig


def figures(table, report, history_csv=None):
    """The plots of a report as matplotlib figures, name -> figure (`PLOTS` order; the training
    curves only when ``history_csv`` exists)."""
    plt = _pyplot()
    y = protocols.targets(table["label"])
    labels = table["label"].to_numpy()
    score, p = table["score"].to_numpy(np.float64), table["p_spoof"].to_numpy(np.float64)
    data = report.get("name", "")  # which data: every title says it
    source = report.get("threshold", {}).get("source", "")
    chosen = report["operating_points"]["chosen"]["threshold"]
    decision = (decision_score(score, p, chosen), threshold_kind(source))
    out = {}
    for name, size, draw in (
            ("roc.png", (5, 5), lambda ax: roc_plot(ax, y, p, report["roc_auc"], data)),
            ("det.png", (5, 5), lambda ax: det_plot(ax, score, y, report["eer"], data)),
            ("score_hist.png", (6, 4),
             lambda ax: histogram_plot(ax, score, labels, report["eer_threshold"], data,
                                       decision)),
            ("confusion.png", (4.5, 4), lambda ax: confusion_plot(ax, y, p, chosen, data,
                                                                  source))):
        fig, ax = plt.subplots(figsize=size)
        draw(ax)
        out[name] = fig
    if history_csv is not None and Path(history_csv).exists():
        out["training_curves.png"] = training_curves(history_csv)
    for fig in out.values():
        fig.tight_layout()
    return out


def save_plots(table, report, out_dir, history_csv=None):
    """ROC, DET (normal-deviate axes), score histograms, confusion matrix at the chosen
    threshold and, when ``history_csv`` exists, the training curves (`figures`), each written
    atomically.

    Parameters
    ----------
    table : pandas.DataFrame
        ``label, score, p_spoof`` per utterance (`breakdown.score_table`).
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
    written = []
    for name, fig in figures(table, report, history_csv).items():
        with atomic_output(Path(out_dir) / name, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
        plt.close(fig)
        written.append(name)
    return written
