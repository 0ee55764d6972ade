"""plots.py: every plot readable for packed and wide scores (no tick label overlaps another),
and the confusion matrix titled with the threshold actually used."""

import re

import numpy as np
import pandas as pd
import pytest

from deepfake_detector.evaluation import plots
from deepfake_detector.evaluation import report
from deepfake_detector.evaluation.metrics import sigmoid


def score_table(kind, n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    if kind == "packed":  # a random backbone: every P(spoof) within 1e-5 of 0.5
        p = 0.5 + rng.uniform(-1e-5, 1e-5, n) + 2e-6 * y
        score = np.log((1 - p) / p)
    else:  # a trained detector: scores spread over tens of units
        score = np.where(y == 0, rng.normal(8, 6, n), rng.normal(-15, 9, n))
    return pd.DataFrame({"utt_id": [f"u{i}" for i in range(n)], "speaker": "s",
                         "attack": np.where(y == 0, "-", "A01"),
                         "label": np.where(y == 0, "bonafide", "spoof"), "score": score,
                         "p_spoof": sigmoid(-score)})


def history(tmp_path, kind):
    rng = np.random.default_rng(1)
    epochs = np.arange(8)
    base = 0.6931471 + (rng.uniform(-1e-5, 1e-5, 8) if kind == "packed"
                        else -0.05 * epochs)
    h = pd.DataFrame({"epoch": epochs, "loss": base, "val_loss": base + 1e-6,
                      "accuracy": 0.5 + 0.01 * epochs, "val_accuracy": 0.5 + 0.02 * epochs,
                      "val_eer": rng.uniform(0.19, 0.62, 8), "val_auc": rng.uniform(0.3, 0.8, 8)})
    path = tmp_path / f"history_{kind}.csv"
    h.to_csv(path, index=False)
    return path


def overlapping_labels(fig):
    """Pairs of tick labels (on one axis) whose drawn boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in
                     axis.get_ticklabels() if t.get_visible() and t.get_text()]
            for i, (a, box_a) in enumerate(boxes):
                for b, box_b in boxes[i + 1:]:
                    if box_a.overlaps(box_b):
                        bad.append((a, b))
    return bad


@pytest.mark.parametrize("kind", ["packed", "wide"])
def test_no_tick_label_overlaps_another(kind, tmp_path):
    table = score_table(kind)
    m, _, _ = report.compute_report(table, threshold=0.4999843)
    figs = plots.figures(table, m, history(tmp_path, kind))
    assert set(figs) == set(plots.PLOTS)
    for name, fig in figs.items():
        assert not overlapping_labels(fig), (kind, name, overlapping_labels(fig))
        labels = [re.sub(r"\$\\mathdefault\{(.*)\}\$", r"\1", t.get_text())
                  for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]
        assert all(len(label) <= 8 for label in labels), (name, labels)  # no 0.00063475...
        fig.savefig(tmp_path / f"{kind}_{name}", dpi=60)  # for a look, and that it renders
    plots._pyplot().close("all")


def test_confusion_title_names_the_threshold_used():
    table = score_table("packed")
    for threshold in (0.4999843, 0.5, 0.73):
        m, _, _ = report.compute_report(table, threshold=threshold)
        fig = plots.figures(table, m)["confusion.png"]
        title = fig.axes[0].get_title()
        # never 0.50 for 0.4999843; and where it came from
        assert title == f"P(spoof) >= {threshold:g} (--threshold)", title
        counts = [int(t.get_text()) for t in fig.axes[0].texts]
        chosen = m["operating_points"]["chosen"]
        assert counts == [chosen["tn"], chosen["fp"], chosen["fn"], chosen["tp"]]
        plots._pyplot().close(fig)


def test_det_ticks_are_spaced():
    from scipy.stats import norm

    for low in (0.0001, 0.001, 0.01):
        t = plots.det_ticks(low)
        assert len(t) >= 5 and np.all(np.diff(norm.ppf(t)) >= plots.DET_SPACING - 1e-9)


def test_titles_name_the_data_and_the_threshold_s_source(tmp_path):
    """Issue 23: a plot did not say which data it showed (held-out part or dev) nor whether the
    threshold was calibrated."""
    table = score_table("wide")
    m, _, _ = report.compute_report(table)
    figs = plots.figures(table, {**m, "name": "demo_dev"}, history(tmp_path, "wide"))
    for name in ("roc.png", "det.png", "score_hist.png", "confusion.png"):
        assert figs[name].axes[0].get_title().endswith("\ndemo_dev"), name
    assert "(default, not calibrated)" in figs["confusion.png"].axes[0].get_title()
    eer_panel = [ax for ax in figs["training_curves.png"].axes if "EER" in ax.get_title()][0]
    assert eer_panel.get_title() == "EER (validation, %)"
    assert max(eer_panel.lines[0].get_ydata()) > 1  # percent, not a fraction
    plots._pyplot().close("all")


@pytest.mark.parametrize("threshold", [0.0, 0.123, -3.3, 7.77])
def test_the_histogram_threshold_is_a_bin_edge(threshold):
    score = np.random.default_rng(0).normal(0, 5, 300)
    bins = plots.threshold_bins(score, threshold)
    assert bins[0] <= score.min() and bins[-1] >= score.max()
    assert np.isclose(bins, threshold, atol=1e-9).any()
    assert 38 <= len(bins) - 1 <= 42 and np.allclose(np.diff(bins), np.diff(bins)[0])


def test_the_histogram_draws_the_threshold_confusion_counts_at_and_the_eer_point():
    """Issue 34, item 6: score_hist.png drew the data's own EER point while confusion.png
    counted at the calibrated threshold, without saying so. Now both lines are drawn and
    named, and the utterances on each side of the decision line are confusion.png's counts."""
    table = score_table("wide")
    threshold = 0.2
    m, _, _ = report.compute_report(table, threshold=threshold)
    figs = plots.figures(table, m)
    ax = figs["score_hist.png"].axes[0]
    lines = {line.get_label(): line.get_xdata()[0] for line in ax.lines}
    assert set(lines) == {"decision threshold (--threshold; confusion.png)",
                          "EER point of this data"}
    assert lines["EER point of this data"] == pytest.approx(m["eer_threshold"])
    cut = lines["decision threshold (--threshold; confusion.png)"]
    assert cut == pytest.approx(np.log((1 - threshold) / threshold))
    chosen = m["operating_points"]["chosen"]
    spoof_side = table["score"] <= cut  # P(spoof) >= threshold
    assert (spoof_side & (table["label"] == "bonafide")).sum() == chosen["fp"]
    assert (spoof_side & (table["label"] == "spoof")).sum() == chosen["tp"]
    # a calibrated run's scores carry the prior's log-odds: the line moves with them
    shifted = table.assign(score=table["score"] + 1.5)
    assert plots.decision_score(shifted["score"].to_numpy(), shifted["p_spoof"].to_numpy(),
                                threshold) == pytest.approx(cut + 1.5)
    plots._pyplot().close("all")
