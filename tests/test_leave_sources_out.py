"""scripts/leave_sources_out.py: recipes chosen on sources left out as a whole (issue 33)."""

import numpy as np
import pandas as pd
import pytest

import leave_sources_out as L
from conftest import tone, write_wav
from deepfake_detector.training import probe


def table_of(rows):
    """rows: (source, link, label, n) -> the table read_source makes (paths made up)."""
    out = []
    for source, link, label, n in rows:
        out += [{"path": f"/x/{source}/{i}.wav", "label": label, "source": source,
                 "link": link, "data": source.split(":")[0], "role": "data"}
                for i in range(n)]
    return pd.DataFrame(out)


def test_linked_sources_stay_together_and_every_fold_has_both_classes():
    """No corpus, synthesizer or shared speaker on both sides: sources of one repository (a
    demo's real references and its clones) form one unit, transitively through a system
    published in two repositories; every fold tests on both classes."""
    t = table_of([("d:realA", "d:repo:a", "bonafide", 30), ("d:cloneA", "d:repo:a", "spoof", 20),
                  ("d:cloneB", "d:repo:b", "spoof", 10), ("d:cloneA", "d:repo:b", "spoof", 5),
                  ("d:realC", "d:repo:c", "bonafide", 25), ("d:ttsC", "d:repo:c", "spoof", 25),
                  ("d:realD", "d:repo:d", "bonafide", 40), ("d:realE", "d:repo:e", "bonafide", 8),
                  ("d:ttsF", "d:repo:f", "spoof", 30), ("s:s", "s:data", "bonafide", 12),
                  ("s:A01", "s:data", "spoof", 12)])
    u = L.units(t)
    assert u["d:realA"] == u["d:cloneA"] == u["d:cloneB"]  # a through cloneA's two repos b
    assert u["s:s"] == u["s:A01"] and len(set(u.values())) == 6
    for seed in (1, 2, 3):
        fold = L.deal_folds(t, 3, seed)
        for unit in set(u.values()):
            assert len({fold[s] for s in u if u[s] == unit}) == 1, unit
        t["fold"] = t["source"].map(fold)
        assert (pd.crosstab(t["fold"], t["label"]) > 0).all().all()
    with pytest.raises(ValueError, match="6 independent units of sources cannot give 5 folds"):
        L.deal_folds(t, 5, 1)
    t.loc[t["source"] == "d:ttsF", "role"] = "train-only"
    assert L.deal_folds(t, 2, 1)["d:ttsF"] == -1


def test_the_run_reports_each_left_out_source_at_its_own_threshold(tmp_path, monkeypatch):
    """End to end on generated audio with an untrained encoder: every source is left out
    once per seed, with its share accepted (genuine) or detected (spoof) at the threshold the
    probe chose on its own training data; the embeddings are reused, recomputed for a file
    that changes, and a source added later embeds only its own files."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for k, (label, freq) in enumerate([("bonafide", 150), ("bonafide", 180), ("bonafide", 210),
                                       ("spoof", 400), ("spoof", 450), ("spoof", 500)]):
        for i in range(4):
            name = f"s{k}_{i}.wav"
            write_wav(audio / name, tone(1.0, freq=freq + 7 * i, seed=10 * k + i))
            rows.append({"file": name, "label": label, "system": f"sys{k}",
                         "source_repo": f"repo{k}"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    args = ["--preset", "random:mini", "--data", f"gen={tmp_path / 'manifest.csv'}:{audio}",
            "--folds", "3", "--seeds", "1", "2", "--out", str(tmp_path / "out"), "--quiet"]
    results = L.main(args)
    assert sorted(results["source"].unique()) == [f"gen:sys{k}" for k in range(6)]
    assert (results.groupby("seed")["source"].count() == 6).all()
    genuine = results[results["label"] == "bonafide"]
    assert genuine["accepted"].between(0, 1).all() and results["detected"].isna().equals(
        results["label"] == "bonafide")
    assert np.isfinite(results["threshold"]).all() and results["fold_eer"].between(0, 1).all()
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| gen:sys0 | bonafide | 4 |" in summary and "own threshold" in summary
    assert "genuine recordings accepted: " in summary and "spoofs detected: " in summary
    selective = pd.read_csv(tmp_path / "out" / "selective.csv")
    margin = selective[selective["rule"] == "margin"]
    assert len(margin) == 2 * 3 * len(L.COVERAGES)  # seeds x folds x coverages
    assert np.allclose(margin.groupby("coverage")["answered"].mean().sort_index().to_numpy(),
                       sorted(L.COVERAGES), atol=0.13)  # 4 test files a fold: rounded shares
    assert "Abstaining (share of the left-out recordings answered" in summary
    stamp = (tmp_path / "out" / "embeddings.npz").stat().st_mtime_ns
    L.main(args)
    assert (tmp_path / "out" / "embeddings.npz").stat().st_mtime_ns == stamp  # reused
    write_wav(audio / "s0_0.wav", tone(2.0, freq=150, seed=99))  # another size: recomputed
    embedded = []
    real_embed = probe.embed
    monkeypatch.setattr(probe, "embed", lambda paths, *a: embedded.append(list(paths))
                        or real_embed(paths, *a))
    L.main(args)
    assert (tmp_path / "out" / "embeddings.npz").stat().st_mtime_ns != stamp
    assert embedded == [[str(audio / "s0_0.wav")]]  # only the changed file
    write_wav(audio / "extra.wav", tone(1.0, freq=600, seed=5))
    pd.DataFrame([{"file": "extra.wav", "label": "spoof"}]).to_csv(tmp_path / "x.csv",
                                                                   index=False)
    L.main(args + ["--train-only", f"x={tmp_path / 'x.csv'}:{audio}"])
    assert embedded[1:] == [[str(audio / "extra.wav")]]  # a new source: only its files


def test_abstaining_nearest_the_threshold_leaves_the_least_sure_unanswered():
    """selective_rows on made-up scores: the margin rule answers the shares farthest from the
    threshold (the wrong ones, near it, are left), the familiarity rule those at or below 1."""
    from scipy.special import expit

    t = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    z = np.array([-4.0, -3.0, -2.0, 0.1, 4.0, 3.0, 2.0, -0.1])  # the two wrong: nearest
    u = np.array([0.5, 0.5, 2.0, 0.5, 0.5, 3.0, 0.5, 0.5])
    rows = {(r["rule"], r["coverage"]): r for r in L.selective_rows(expit(z), 0.5, u, t)}
    assert rows[("margin", 1.0)]["wrong"] == 0.25 and rows[("margin", 1.0)]["answered"] == 1.0
    assert rows[("margin", 0.7)]["answered"] == 0.75 and rows[("margin", 0.7)]["wrong"] == 0
    assert rows[("margin", 0.7)]["wrong_abstained"] == 1.0
    fam = rows[("familiar", None)]
    assert fam["answered"] == 0.75 and fam["wrong"] == pytest.approx(2 / 6)
    assert fam["wrong_abstained"] == 0.0 and fam["accepted"] == pytest.approx(2 / 3)
    band = rows[("band", probe.UNCERTAIN_MARGIN)]  # P within 0.1 of 0.5: the two nearest
    assert band["answered"] == 0.75 and band["wrong"] == 0 and band["wrong_abstained"] == 1
