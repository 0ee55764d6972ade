"""EER and min t-DCF against the ASVspoof definitions, written here again from the evaluation
plan's formulas (not from any package's code), on random, tied and LA-sized score sets, to 1e-12.

The definitions (ASVspoof 2019 evaluation plan, Sec. 3; Kinnunen et al., IEEE/ACM TASLP 2020),
with the conventions of the organisers' evaluation packages:

- the trials are put in ascending order of score, tied trials bonafide before spoof; the DET
  point k rejects the k lowest trials (k = 0..n); miss = rejected bonafide / n_bonafide,
  false alarm = accepted spoof / n_spoof;
- EER: the mean of the two rates at the first point where they are closest; its threshold is
  the score of the last rejected trial;
- min t-DCF: the ASV system's EER threshold taken that way on target vs nontarget scores, a
  trial accepted by the ASV when its score is at or above it; C1 = P_tar (C_miss_cm -
  C_miss_asv P_miss_asv) - P_non C_fa_asv P_fa_asv, C2 = C_fa_cm P_spoof (1 - P_miss_spoof_asv);
  min over the CM DET points of (C1 P_miss_cm + C2 P_fa_cm) / min(C1, C2).
"""

import numpy as np
import pandas as pd
import pytest

from deepfake_detector.evaluation import metrics
from deepfake_detector.evaluation import report

P_SPOOF = 0.05
COSTS = dict(p_tar=(1 - P_SPOOF) * 0.99, p_non=(1 - P_SPOOF) * 0.01, c_miss_asv=1.0,
             c_fa_asv=10.0, c_miss_cm=1.0, c_fa_cm=10.0)


def reference_det(positive, negative):
    """Miss and false-alarm rates at every point, and each point's last rejected score."""
    score = np.concatenate([positive, negative]).astype(np.float64)
    is_negative = np.concatenate([np.zeros(len(positive), int), np.ones(len(negative), int)])
    order = np.lexsort((is_negative, score))  # by score, then positive (0) before negative (1)
    rejected_negative = np.concatenate([[0], np.cumsum(is_negative[order])])
    rejected_positive = np.arange(len(order) + 1) - rejected_negative
    miss = rejected_positive / len(positive)
    false_alarm = (len(negative) - rejected_negative) / len(negative)
    last_rejected = np.concatenate([[score[order][0] - 0.001], score[order]])
    return miss, false_alarm, last_rejected


def reference_eer(positive, negative):
    miss, fa, last = reference_det(positive, negative)
    k = int(np.argmin(np.abs(miss - fa)))
    return (miss[k] + fa[k]) / 2, last[k]


def reference_min_tdcf(bonafide, spoof, target, nontarget, spoof_asv):
    _, t = reference_eer(target, nontarget)
    p_fa_asv = np.count_nonzero(np.asarray(nontarget) >= t) / len(nontarget)
    p_miss_asv = np.count_nonzero(np.asarray(target) < t) / len(target)
    p_miss_spoof_asv = np.count_nonzero(np.asarray(spoof_asv) < t) / len(spoof_asv)
    c1 = COSTS["p_tar"] * (COSTS["c_miss_cm"] - COSTS["c_miss_asv"] * p_miss_asv) \
        - COSTS["p_non"] * COSTS["c_fa_asv"] * p_fa_asv
    c2 = COSTS["c_fa_cm"] * P_SPOOF * (1 - p_miss_spoof_asv)
    if c1 <= 0 or c2 <= 0:
        return None
    miss, fa, _ = reference_det(bonafide, spoof)
    return float(np.min((c1 * miss + c2 * fa) / min(c1, c2)))


def asv_frame(target, nontarget, spoof, sources=None):
    rows = ([("bonafide", "target", s) for s in target]
            + [("bonafide", "nontarget", s) for s in nontarget]
            + [(src, "spoof", s) for s, src in zip(spoof, sources or ["A01"] * len(spoof))])
    return pd.DataFrame(rows, columns=["source", "key", "score"])


def test_reference_itself_on_hand_worked_cases():
    # the tie-flip example: two points equally close in exact arithmetic; (n - k)/n picks k = 4
    assert reference_eer([6, 5, 0, 1, 7, 2], [3, 8, 4])[0] == pytest.approx(7 / 12)
    assert reference_eer([3, 4], [1, 2]) == (0.0, 2)


@pytest.mark.parametrize("bona, spoof, eer, threshold", [
    ([6, 5, 0, 1, 7, 2], [3, 8, 4], 7 / 12, 3),  # equally close points: the official one
    ([3, 4], [1, 2], 0.0, 2),  # separated: the last rejected trial is the top spoof
    ([1, 2, 2], [0, 2], 7 / 12, 2),  # a tie at 2, bonafide rejected first
    ([5, 5, 5], [5, 5], 1.0, 5),  # all tied: the bonafide are rejected before any spoof
    ([0, 1], [2, 3], 1.0, 1),  # swapped direction
    ([0.1, 0.4, 0.35, 0.8], [0.2, 0.3, 0.5, 0.45], 0.5, 0.35),
])
def test_eer_table_of_official_values(bona, spoof, eer, threshold):
    got, thr = metrics.compute_eer(bona, spoof)
    assert got == pytest.approx(eer, abs=1e-12) and thr == threshold


def test_eer_equals_the_definition_on_1000_random_tie_free_sets():
    rng = np.random.default_rng(2026)
    worst = 0.0
    for _ in range(1000):
        n_b, n_s = (int(v) for v in np.exp(rng.uniform(np.log(2), np.log(20_000), 2)))
        bona = rng.normal(rng.uniform(0, 3), rng.uniform(0.3, 2), n_b)
        spoof = rng.normal(0, rng.uniform(0.3, 2), n_s)
        eer, thr = metrics.compute_eer(bona, spoof)
        ref_eer, ref_thr = reference_eer(bona, spoof)
        worst = max(worst, abs(eer - ref_eer))
        assert thr == ref_thr
    assert worst <= 1e-12


def la_sized_system(seed):
    """CM and ASV scores of LA eval's size: 7,355 bonafide and 63,882 spoof CM trials in 13
    attacks; ASV 5,370 target, 1,985 nontarget and the 63,882 spoof trials."""
    rng = np.random.default_rng(seed)
    attacks = [f"A{i:02d}" for i in range(7, 20)]
    src = [attacks[i % 13] for i in range(63_882)]
    shift = {a: rng.uniform(0.5, 4) for a in attacks}
    bona = rng.normal(2, 1, 7_355)
    spoof = np.array([rng.normal(2 - shift[a], 1.2) for a in src])
    asv = asv_frame(rng.normal(3, 1, 5_370), rng.normal(-1, 1.5, 1_985),
                    [rng.normal(2 - 0.5 * shift[a], 1.5) for a in src], src)
    return bona, spoof, src, asv


@pytest.mark.parametrize("seed", range(20))
def test_min_tdcf_equals_the_definition_on_la_sized_systems(seed):
    bona, spoof, src, asv = la_sized_system(seed)
    asv_split = {k: asv.loc[asv["key"] == k, "score"].to_numpy() for k in
                 ("target", "nontarget", "spoof")}
    got = metrics.min_tdcf(bona, spoof, asv)["min_tdcf"]
    ref = reference_min_tdcf(bona, spoof, asv_split["target"], asv_split["nontarget"],
                             asv_split["spoof"])
    assert abs(got - ref) <= 1e-12
    assert abs(metrics.compute_eer(bona, spoof)[0] - reference_eer(bona, spoof)[0]) <= 1e-12
    if seed < 3:  # per attack too (the report's per-attack table), on a few systems
        src = np.asarray(src)
        for attack in ("A07", "A19"):
            sub = asv[(asv["key"] != "spoof") | (asv["source"] == attack)]
            got = metrics.min_tdcf(bona, spoof[src == attack], sub)["min_tdcf"]
            ref = reference_min_tdcf(bona, spoof[src == attack], asv_split["target"],
                                     asv_split["nontarget"],
                                     sub.loc[sub["key"] == "spoof", "score"].to_numpy())
            assert abs(got - ref) <= 1e-12


def test_min_tdcf_worked_by_hand_with_the_official_asv_point():
    # ASV targets [2, 3], nontargets [0, 1]: EER point after rejecting 0 and 1, threshold 1 (the
    # last rejected); accepted when >= 1: P_fa_asv = 1/2, P_miss_asv = 0; spoofs [1.5, 2.5]
    # all accepted: P_miss_spoof_asv = 0. C1 = 0.9405 - 0.0095 * 10 * 0.5 = 0.893, C2 = 0.5.
    asv = asv_frame([2, 3], [0, 1], [1.5, 2.5])
    r = metrics.min_tdcf([1.0, 0.8], [0.2, 0.9], asv)
    assert (r["p_fa_asv"], r["p_miss_asv"], r["p_miss_spoof_asv"]) == (0.5, 0.0, 0.0)
    assert r["c1"] == pytest.approx(0.893) and r["c2"] == pytest.approx(0.5)
    # CM points (miss, fa): (0, 1), (0, .5), (.5, .5), (.5, 0), (1, 0); normalized by 0.5:
    # 1, 0.5, 1.393, 0.893, 1.786 -> 0.5, after rejecting the spoof at 0.2
    assert r["min_tdcf"] == pytest.approx(0.5, abs=1e-12) and r["threshold"] == 0.2
    assert r["min_tdcf"] == pytest.approx(reference_min_tdcf([1.0, 0.8], [0.2, 0.9], [2, 3],
                                                             [0, 1], [1.5, 2.5]), abs=1e-12)


def test_an_attack_the_asv_always_rejects_is_undefined_not_fatal():
    """C2 = 0 for an attack whose every spoof the ASV rejects: that attack's t-DCF is
    reported as undefined, with the reason; the pooled numbers and every file still come."""
    asv = asv_frame([2, 3], [0, 1], [1.5, 2.5, 0.2, 0.5], ["A01", "A01", "A02", "A02"])
    r = metrics.min_tdcf([1.0], [0.0], asv[(asv["key"] != "spoof") | (asv["source"] == "A02")])
    assert r["min_tdcf"] is None and "rejects every spoof" in r["reason"] and r["c2"] == 0
    table = pd.DataFrame({"utt_id": [f"u{i}" for i in range(6)], "speaker": "s",
                          "attack": ["-", "-", "A01", "A01", "A02", "A02"],
                          "label": ["bonafide"] * 2 + ["spoof"] * 4,
                          "score": [1.0, 0.9, 0.1, 0.95, 0.2, 0.3]})
    table["p_spoof"] = metrics.sigmoid(-table["score"])
    m, per_attack, _ = report.compute_report(table, asv=asv)
    rows = per_attack.set_index("attack")
    assert rows.loc["A02", "min_tdcf"] is None or np.isnan(rows.loc["A02", "min_tdcf"])
    assert "rejects every spoof" in rows.loc["A02", "min_tdcf_note"]
    assert rows.loc["A01", "min_tdcf"] >= 0 and m["min_tdcf"]["min_tdcf"] is not None
