"""scripts/fuse_scores.py: logistic-regression fusion of several systems' score files."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import fuse_scores  # noqa: E402
from deepfake_detector.evaluation import calibration as C  # noqa: E402
from deepfake_detector.evaluation import metrics  # noqa: E402


def complementary_systems(folder, n=1_200, seed=0):
    """Two systems that each see one attack: system 1 scores A01 spoofs low and cannot tell A02
    from bonafide; system 2 the other way round. Written as dev (first half) and eval score
    files, with one protocol."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(["bonafide", "A01", "A02"], n, p=[0.4, 0.3, 0.3])
    s1 = rng.normal(np.where(kind == "A01", -2.0, 1.0), 1.0) * 3 + 1   # mis-scaled too
    s2 = rng.normal(np.where(kind == "A02", -2.0, 1.0), 1.0) * 0.5 - 2
    ids = [f"LA_E_{i:07d}" for i in range(n)]
    (folder / "protocol.txt").write_text("".join(
        f"LA_0001 {u} - {'- bonafide' if k == 'bonafide' else k + ' spoof'}\n"
        for u, k in zip(ids, kind)))
    half = n // 2
    files = {}
    for part, rows in (("dev", slice(0, half)), ("eval", slice(half, n))):
        for name, s in (("s1", s1), ("s2", s2)):
            path = folder / f"{name}_{part}.txt"
            path.write_text("".join(f"{u} {float(v)!r}\n" for u, v in zip(ids[rows], s[rows])))
            files[name, part] = path
    t = (kind != "bonafide").astype(int)
    return files, folder / "protocol.txt", pd.Series(t, index=ids)


def eer(scores, t):
    return metrics.compute_eer(scores[t == 0], scores[t == 1])[0]


def test_fusion_of_two_complementary_systems_beats_each_on_held_out_data(tmp_path):
    files, proto, t = complementary_systems(tmp_path)
    fusion, fused = fuse_scores.fuse([files["s1", "dev"], files["s2", "dev"]], proto,
                                     [files["s1", "eval"], files["s2", "eval"]],
                                     tmp_path / "fused.txt")
    y = t.loc[fused.index].to_numpy()
    single = [eer(pd.read_csv(files[s, "eval"], sep=" ", header=None)[1].to_numpy(), y)
              for s in ("s1", "s2")]
    assert eer(fused.to_numpy(), y) < min(single) - 0.05, (eer(fused.to_numpy(), y), single)
    assert all(w > 0 for w in fusion["weights"])  # both systems carry information
    saved = json.loads((tmp_path / "fused.txt.fusion.json").read_text())
    assert saved["weights"] == fusion["weights"] and len(saved["dev"]) == 2
    written = pd.read_csv(tmp_path / "fused.txt", sep=" ", header=None, index_col=0)[1]
    assert np.allclose(written.to_numpy(), fused.to_numpy())
    # a calibrated LLR: Cllr below 1 and below each raw system's on the held-out part
    f = fused.to_numpy()
    assert metrics.cllr(f[y == 0], f[y == 1]) < 0.8


def test_fusion_refuses_mismatched_or_reused_utterances(tmp_path):
    files, proto, _ = complementary_systems(tmp_path, n=200)
    lines = files["s2", "eval"].read_text().splitlines()
    (tmp_path / "short.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="does not score the utterances .* 1 missing"):
        fuse_scores.fuse([files["s1", "dev"], files["s2", "dev"]], proto,
                         [files["s1", "eval"], tmp_path / "short.txt"], tmp_path / "f.txt")
    with pytest.raises(ValueError, match="were used to fit the fusion"):
        fuse_scores.fuse([files["s1", "dev"]], proto, [files["s1", "dev"]], tmp_path / "f.txt")
    with pytest.raises(ValueError, match="2 development systems but 1"):
        fuse_scores.fuse([files["s1", "dev"], files["s2", "dev"]], proto,
                         [files["s1", "eval"]], tmp_path / "f.txt")
    assert not (tmp_path / "f.txt").exists()


def test_the_command_line_fuses_evaluate_output_folders(tmp_path, capsys):
    files, proto, _ = complementary_systems(tmp_path, n=300)
    for name in ("s1", "s2"):  # an evaluate.py output folder holds scores.txt
        (tmp_path / f"{name}_evalfolder").mkdir()
        (tmp_path / f"{name}_evalfolder" / "scores.txt").write_text(
            files[name, "eval"].read_text())
    fuse_scores.main(["--dev", str(files["s1", "dev"]), str(files["s2", "dev"]),
                      "--dev-protocol", str(proto), "--apply",
                      str(tmp_path / "s1_evalfolder"), str(tmp_path / "s2_evalfolder"),
                      "--out", str(tmp_path / "out" / "fused.txt")])
    out = capsys.readouterr().out
    assert "system1" in out and "fused" in out and "150 scores" in out
    fusion = json.loads((tmp_path / "out" / "fused.txt.fusion.json").read_text())
    assert fusion["applied_to"][0].endswith("scores.txt")
    C.check_calibration(fusion, "fusion", systems=2)  # a valid calibration of two systems
    assert "warning" not in capsys.readouterr().err  # overlapping classes: a finite optimum


def test_perfectly_separated_development_data_are_warned_about(tmp_path, capsys):
    """One system separates the dev set perfectly (as the imported AASIST does on mini dev):
    the regression has no finite optimum, and the command says so on stderr and in the JSON."""
    files, proto, t = complementary_systems(tmp_path, n=200)
    dev_ids = [line.split()[0] for line in files["s1", "dev"].read_text().splitlines()]
    (tmp_path / "perfect_dev.txt").write_text("".join(
        f"{u} {5.0 - 10.0 * float(t[u])!r}\n" for u in dev_ids))
    fuse_scores.main(["--dev", str(tmp_path / "perfect_dev.txt"), str(files["s2", "dev"]),
                      "--dev-protocol", str(proto), "--apply", str(files["s1", "eval"]),
                      str(files["s2", "eval"]), "--out", str(tmp_path / "fused.txt")])
    err = capsys.readouterr().err
    assert "warning: the calibration data are perfectly separated" in err
    fusion = json.loads((tmp_path / "fused.txt.fusion.json").read_text())
    assert "perfectly separated" in fusion["warning"]


def test_a_system_of_huge_scale_is_fused_like_the_same_at_scale_one(tmp_path):
    """Issue 32, item 9: one system scaled by 1e300 stopped the optimiser at iteration 0 and
    weights [0, 0], bias 0 were written as the fusion (every fused score 0), exit 0."""
    files, proto, t = complementary_systems(tmp_path)
    for part in ("dev", "eval"):
        table = pd.read_csv(files["s1", part], sep=" ", header=None)
        huge = tmp_path / f"huge_{part}.txt"
        huge.write_text("".join(f"{u} {v * 1e300!r}\n" for u, v in zip(table[0], table[1])))
        files["huge", part] = huge
    plain, fused = fuse_scores.fuse([files["s1", "dev"], files["s2", "dev"]], proto,
                                    [files["s1", "eval"], files["s2", "eval"]],
                                    tmp_path / "plain.txt")
    scaled, fused_huge = fuse_scores.fuse([files["huge", "dev"], files["s2", "dev"]], proto,
                                          [files["huge", "eval"], files["s2", "eval"]],
                                          tmp_path / "huge.txt")
    assert scaled["weights"][0] * 1e300 == pytest.approx(plain["weights"][0], rel=1e-4)
    np.testing.assert_allclose(fused_huge.to_numpy(), fused.to_numpy(), rtol=1e-4, atol=1e-6)


def test_a_fit_that_finds_nothing_is_refused_and_out_must_be_a_file(tmp_path, capsys):
    files, proto, _ = complementary_systems(tmp_path)
    ids = pd.read_csv(files["s1", "dev"], sep=" ", header=None)[0]
    (tmp_path / "flat.txt").write_text("".join(f"{u} 0.0\n" for u in ids))
    with pytest.raises(ValueError, match="the calibration fit failed .* nothing was written"):
        C.fit_llr(np.zeros(10), [0, 1] * 5)
    with pytest.raises(SystemExit, match="fit failed"):
        fuse_scores.main(["--dev", str(tmp_path / "flat.txt"), "--dev-protocol", str(proto),
                          "--apply", str(files["s1", "eval"]), "--out",
                          str(tmp_path / "f.txt")])
    assert not (tmp_path / "f.txt").exists()
    with pytest.raises(SystemExit, match="is a folder; name the fused score file"):
        fuse_scores.main(["--dev", str(files["s1", "dev"]), "--dev-protocol", str(proto),
                          "--apply", str(files["s1", "eval"]), "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="slope is 0: the scores carry no usable information"):
        C.check_calibration({"weights": [0.0], "bias": 0.0}, "calibration.json")
