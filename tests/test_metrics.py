"""metrics.py: classification metrics, EER, min t-DCF and calibration, worked out by hand."""

import numpy as np
import pytest

from deepfake_detector.evaluation import metrics

Y = np.array([0, 0, 1, 1, 1])  # 1 = spoof
P = np.array([0.1, 0.6, 0.4, 0.8, 0.9])  # P(spoof)


def test_metrics_worked_by_hand_spoof_is_positive():
    m = metrics.binary_metrics(Y, P, 0.5)  # predicted spoof: items 1, 3, 4
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)  # of 3 flagged, 2 are spoof
    assert m["recall"] == pytest.approx(2 / 3)  # of 3 spoofs, 2 flagged
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["bonafide_recall"] == pytest.approx(1 / 2)


def test_threshold_is_inclusive_and_extremes():
    assert metrics.binary_metrics(Y, P, 0.4)["tp"] == 3  # p >= t is spoof
    m = metrics.binary_metrics(Y, P, 0.95)  # nothing flagged
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_sweep_and_best_f1():
    table = metrics.threshold_sweep(Y, P, [0.05, 0.3, 0.5, 0.7])
    assert list(table["threshold"]) == [0.05, 0.3, 0.5, 0.7]
    # 0.05: all spoof -> P 3/5, R 1, F1 .75; 0.3: 4 flagged, 3 right -> F1 6/7
    np.testing.assert_allclose(table["f1"], [0.75, 6 / 7, 2 / 3, 0.8])
    best = metrics.best_f1(table)
    assert best["threshold"] == 0.3 and best["f1"] == pytest.approx(6 / 7)


def test_eer_is_invariant_to_increasing_transforms():
    rng = np.random.default_rng(0)
    bona, spoof = rng.normal(1, 1, 300), rng.normal(-1, 1.5, 900)
    spoof[:50] = bona[:50]  # some exact ties across classes
    eer = metrics.compute_eer(bona, spoof)[0]
    assert 0.1 < eer < 0.3
    for f in (np.exp, np.arctan, lambda x: 3 * x + 7, lambda x: x ** 3):
        assert metrics.compute_eer(f(bona), f(spoof))[0] == pytest.approx(eer, abs=1e-12)


def test_eer_matches_a_brute_force_sweep():
    rng = np.random.default_rng(1)
    bona, spoof = rng.normal(0.5, 1, 200), rng.normal(-0.5, 1, 500)
    best = min(((abs(np.mean(bona < t) - np.mean(spoof >= t)),
                 (np.mean(bona < t) + np.mean(spoof >= t)) / 2)
                for t in np.concatenate([bona, spoof])))
    assert metrics.compute_eer(bona, spoof)[0] == pytest.approx(best[1])


def _scores(seed=0, n_bona=40, n_spoof=160):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_bona, int), np.ones(n_spoof, int)]
    score = np.r_[rng.normal(1.0, 1.0, n_bona), rng.normal(-1.0, 1.0, n_spoof)]
    return y, np.round(score, 1)  # rounding makes ties, which must stay together


@pytest.mark.parametrize("seed, tied", [(0, True), (1, True), (2, True), (0, False),
                                        (1, False)])
def test_calibrated_eer_threshold_reproduces_the_eer_point(seed, tied):
    """The calibrated threshold realizes the reachable point nearest the EER (`eer_point`); on
    tie-free scores that is exactly the point of the official EER."""
    y, score = _scores(seed)
    if not tied:
        score = score + np.random.default_rng(seed).normal(0, 1e-3, score.size)
    cal = metrics.calibrate_threshold(y, score, "eer")
    t = cal["score_threshold"]
    assert not np.any(score == t)  # no utterance sits on the threshold
    flagged = np.mean(score[y == 0] < t)  # bonafide called spoof
    missed = np.mean(score[y == 1] >= t)  # spoof called bonafide
    eer, _ = metrics.compute_eer(score[y == 0], score[y == 1])
    _, p_miss, p_fa = metrics.eer_point(score[y == 0], score[y == 1])
    assert flagged == pytest.approx(cal["bonafide_flagged"], abs=1e-12) == p_miss
    assert missed == pytest.approx(cal["spoof_missed"], abs=1e-12) == p_fa
    assert cal["eer"] == eer  # the official EER of the validation scores, for reference
    if not tied:
        assert (flagged + missed) / 2 == pytest.approx(eer, abs=1e-12)
    # the same decision on P(spoof), as evaluate.py and predict.py apply it
    p = metrics.sigmoid(-score)
    np.testing.assert_array_equal(p >= cal["threshold"], score < t)


def test_calibrated_f1_and_false_alarm_thresholds():
    y, score = _scores(3)
    f1 = metrics.calibrate_threshold(y, score, "f1")
    best = max(metrics.classification_metrics(y, score < t)["f1"]
               for t in np.r_[np.unique(score), np.inf])  # brute force over every threshold
    assert metrics.classification_metrics(y, score < f1["score_threshold"])["f1"] == best
    for rate in (0.0, 0.05, 0.2):
        far = metrics.calibrate_threshold(y, score, f"far:{rate}")
        pred = score < far["score_threshold"]
        assert np.mean(pred[y == 0]) <= rate  # at most RATE of bonafide flagged
        # and no higher threshold keeps that promise while catching more spoofs
        higher = np.unique(score)[np.unique(score) > far["score_threshold"]]
        if higher.size:
            assert np.mean(score[y == 0] < higher[0] + 1e-9) > rate
    for bad in ("median", "far:2", "far:x"):
        with pytest.raises(ValueError, match="expected eer, f1, far:RATE"):
            metrics.calibrate_threshold(y, score, bad)
