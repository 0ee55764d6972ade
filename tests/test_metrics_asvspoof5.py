"""minDCF, actDCF and Cllr against the ASVspoof 5 Track 1 definitions, written here again from
the evaluation plan's formulas (not from any package's code), on 1,000 random score sets with and
without ties, to 1e-12; and on score files of the ASVspoof 5 layout through evaluate.py.

The definitions (ASVspoof 5 evaluation plan; the organisers' evaluation package), with
bonafide the target class, pi = P_spoof = 0.05, C_miss = 1, C_fa = 10:

- minDCF: on the DET points of the EER (trials in ascending order of score, tied trials
  bonafide before spoof, point k rejects the k lowest), min of (C_miss P_miss (1 - pi) + C_fa
  P_fa pi), normalized by min(C_miss (1 - pi), C_fa pi);
- actDCF: the same cost at the Bayes threshold t = -log(C_miss (1 - pi) / (C_fa pi)), a
  bonafide score below t missed, a spoof score at or above t accepted;
- Cllr: (mean log2(1 + exp(-s)) over bonafide + mean log2(1 + exp(s)) over spoof) / 2.
"""

import math

import numpy as np
import pandas as pd
import pytest

from deepfake_detector.evaluation import metrics

PI, C_MISS, C_FA = 0.05, 1.0, 10.0


def reference_det(bonafide, spoof):
    trials = sorted([(s, 0) for s in bonafide] + [(s, 1) for s in spoof])  # ties: bonafide first
    points, rejected_bona, rejected_spoof = [(0.0, 1.0)], 0, 0
    for _, is_spoof in trials:
        rejected_spoof += is_spoof
        rejected_bona += 1 - is_spoof
        points.append((rejected_bona / len(bonafide),
                       (len(spoof) - rejected_spoof) / len(spoof)))
    return points


def reference_min_dcf(bonafide, spoof):
    norm = min(C_MISS * (1 - PI), C_FA * PI)
    return min(C_MISS * m * (1 - PI) + C_FA * f * PI for m, f in reference_det(bonafide, spoof)) \
        / norm


def reference_act_dcf(bonafide, spoof):
    t = -math.log(C_MISS * (1 - PI) / (C_FA * PI))
    miss = sum(s < t for s in bonafide) / len(bonafide)
    fa = sum(s >= t for s in spoof) / len(spoof)
    return (C_MISS * (1 - PI) * miss + C_FA * PI * fa) / min(C_MISS * (1 - PI), C_FA * PI)


def reference_cllr(bonafide, spoof):
    b = sum(math.log2(1 + math.exp(-s)) for s in bonafide) / len(bonafide)
    f = sum(math.log2(1 + math.exp(s)) for s in spoof) / len(spoof)
    return (b + f) / 2


def random_set(rng):
    n_b, n_s = (int(v) for v in np.exp(rng.uniform(np.log(1), np.log(400), 2)))
    scale = rng.uniform(0.1, 8)
    bona = rng.normal(rng.uniform(-2, 4), 1, n_b) * scale
    spoof = rng.normal(rng.uniform(-4, 2), 1, n_s) * scale
    if rng.random() < 0.5:  # ties, across and within classes
        step = rng.choice([0.5, 1.0, 2.0])
        bona, spoof = np.round(bona / step) * step, np.round(spoof / step) * step
    return bona, spoof


def test_hand_worked_values():
    # t = -log(1.9) = -0.642: bonafide [-1, 2] -> one miss of two; spoof [-3, 0] -> one accepted
    # actDCF = (0.95 * 0.5 + 10 * 0.05 * 0.5) / 0.5 = 1.45
    assert metrics.bayes_threshold() == pytest.approx(-math.log(1.9))
    assert metrics.act_dcf([-1, 2], [-3, 0])[0] == pytest.approx(1.45, abs=1e-12)
    # at the threshold exactly: a bonafide score is accepted (no miss), a spoof score too (a
    # false alarm): (0 + 10 * 0.05 * 1) / 0.5 = 1
    t = metrics.bayes_threshold()
    assert metrics.act_dcf([t], [t])[0] == pytest.approx(1.0, abs=1e-12)
    assert metrics.act_dcf([np.nextafter(t, -1)], [np.nextafter(t, -1)])[0] == pytest.approx(1.9)
    # minDCF: separable scores reach 0; a system that says 0 for everything has Cllr 1
    assert metrics.min_dcf([3, 4], [1, 2])[0] == 0.0
    assert metrics.cllr([0.0, 0.0], [0.0]) == pytest.approx(1.0, abs=1e-15)
    # all tied: the DET points run (0, 1) -> (1, 1) -> (1, 0); cost 0.5 / 0.5 at the start
    assert metrics.min_dcf([5, 5], [5])[0] == pytest.approx(1.0)


def test_the_three_equal_the_definitions_on_1000_random_sets_with_ties():
    rng = np.random.default_rng(5)
    worst = {"min_dcf": 0.0, "act_dcf": 0.0, "cllr": 0.0}
    tied = 0
    for _ in range(1000):
        bona, spoof = random_set(rng)
        tied += len(np.unique(np.r_[bona, spoof])) < len(bona) + len(spoof)
        m = metrics.asvspoof5_metrics(bona, spoof)
        ref = {"min_dcf": reference_min_dcf(bona, spoof),
               "act_dcf": reference_act_dcf(bona, spoof), "cllr": reference_cllr(bona, spoof)}
        for k in worst:
            worst[k] = max(worst[k], abs(m[k] - ref[k]))
    assert tied > 300  # the tie handling was exercised
    assert max(worst.values()) <= 1e-12, worst


def test_cllr_stays_finite_where_the_naive_formula_overflows():
    assert metrics.cllr([-800.0], [0.0]) == pytest.approx((800 / math.log(2) + 1) / 2)


def write_asvspoof5_files(folder, n=300, seed=0):
    """A protocol in the ASVspoof 5 layout and its score file (TSV with a header), as the
    organisers' package reads them."""
    rng = np.random.default_rng(seed)
    lines, rows = [], []
    for i in range(n):
        spoof = i % 4 != 0
        codec = ["-", "C01", "C05", "C07"][i % 3 + (i % 2)]
        lines.append(f"T_{i % 17:04d} T_{i:010d} {'F' if i % 2 else 'M'} {codec} "
                     f"{'-' if codec == '-' else i % 3 + 1} - {'AC2' if spoof else '-'} "
                     f"{'A0' + str(i % 8 + 1) if spoof else 'bonafide'} "
                     f"{'spoof' if spoof else 'bonafide'} -")
        rows.append((f"T_{i:010d}", round(rng.normal(-1.5 if spoof else 1.5, 2), 3)))
    (folder / "protocol.tsv").write_text("\n".join(lines) + "\n")
    (folder / "scores.tsv").write_text(
        "filename\tcm-score\n" + "".join(f"{u}\t{s}\n" for u, s in rows))
    return pd.DataFrame(rows, columns=["utt_id", "score"]).assign(
        label=["bonafide" if i % 4 == 0 else "spoof" for i in range(n)])


def test_evaluate_on_an_asvspoof5_score_file_reports_the_official_values(tmp_path):
    import evaluate

    truth = write_asvspoof5_files(tmp_path)
    m = evaluate.evaluate(scores=tmp_path / "scores.tsv", protocol=tmp_path / "protocol.tsv",
                          out=tmp_path / "out", plots=False)
    assert m["source"]["layout"] == "asvspoof5"
    bona = truth.loc[truth["label"] == "bonafide", "score"].tolist()
    spoof = truth.loc[truth["label"] == "spoof", "score"].tolist()
    raw = m["asvspoof5"]["raw"]
    assert abs(raw["min_dcf"] - reference_min_dcf(bona, spoof)) <= 1e-12
    assert abs(raw["act_dcf"] - reference_act_dcf(bona, spoof)) <= 1e-12
    assert abs(raw["cllr"] - reference_cllr(bona, spoof)) <= 1e-12
    assert m["asvspoof5"]["calibrated"] is None and "not calibrated" in m["asvspoof5"]["scores"]
    assert m["asvspoof5"]["cost_model"]["p_spoof"] == 0.05
    # the per-attack table carries minDCF too, against all bonafide
    a02 = next(r for r in m["per_attack"] if r["attack"] == "A02")
    sub = truth.iloc[[i for i in range(len(truth)) if i % 8 == 1]]
    assert a02["n"] == len(sub) == 38
    assert a02["min_dcf"] == pytest.approx(reference_min_dcf(bona, sub["score"].tolist()),
                                           abs=1e-12)
    summary = evaluate.format_report(m)
    assert f"minDCF {raw['min_dcf']:.4f}" in summary and "Cllr" in summary


def test_an_asvspoof5_sasv_score_file_gives_its_cm_column(tmp_path):
    from deepfake_detector import protocols

    (tmp_path / "sasv.tsv").write_text("spk\tfilename\tcm-score\tasv-score\tsasv-score\n"
                                       "E_1\tE_01\t1.5\t-2\t9\nE_1\tE_02\t-0.5\t3\t8\n")
    scores, layout, keys = protocols.read_score_file(tmp_path / "sasv.tsv")
    assert layout == "asvspoof5" and keys is None
    assert scores.to_dict() == {"E_01": 1.5, "E_02": -0.5}
    (tmp_path / "short.tsv").write_text("filename\tcm-score\nE_01\n")
    with pytest.raises(ValueError, match="short.tsv:2: expected 2 columns, got 1"):
        protocols.read_score_file(tmp_path / "short.tsv")
