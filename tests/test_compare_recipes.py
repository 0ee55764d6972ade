"""scripts/compare_recipes.py: recipes x seeds -> one table."""

import json
from pathlib import Path

import pandas as pd
import pytest

import compare_recipes


def test_recipes_are_valid_train_flags():
    groups = {"tts": ["t"], "augmented": ["g1", "g2"]}
    for name, recipe in compare_recipes.RECIPES.items():
        common = ["--preset", "random:mini"] if name.startswith("whisper") else ["--weights",
                                                                                  "none"]
        cfg, _ = compare_recipes.recipe_config(common + ["--data", "a"], recipe, 1, ["v"],
                                               groups)
        assert recipe.at in ("0.5", "calibrated") and recipe.what
        assert (cfg.model == "whisper") == name.startswith("whisper")
        assert (cfg.model == "aasist") == name.startswith("aasist")
        extra = {"vocoded": ["v"], **groups}
        assert cfg.data == ["a"] + [f for g in recipe.groups() for f in extra[g]]
    robust, _ = compare_recipes.recipe_config(["--data", "a"], "aasist_l_robust", 1, ["v"],
                                              groups)
    assert robust.freeze_encoder and robust.init == "AASIST-L" and robust.preset == "AASIST-L"
    assert robust.data == ["a", "v", "t", "g1", "g2"]
    with pytest.raises(ValueError, match="trains on --tts-data too"):
        compare_recipes.recipe_config(["--preset", "p"], "whisper_robust", 1, ["v"])
    ft, _ = compare_recipes.recipe_config(["--preset", "p"], "whisper_vocoded_ft", 1, ["v"])
    assert ft.fine_tune_blocks == 2 and ft.preset == "p" and ft.data[-1] == "v"
    fine, _ = compare_recipes.recipe_config([], "fine_tuned", 1)
    aug, _ = compare_recipes.recipe_config([], "augmented", 1)
    assert fine.fine_tune_blocks == 2 and aug.augmentation()["random_crop"]
    base, _ = compare_recipes.recipe_config([], "baseline", 1)
    assert base.augmentation() is None and base.class_weight == "none"
    voc, _ = compare_recipes.recipe_config(["--data", "a"], "lcnn_vocoded", 1, vocoded=["v"])
    assert voc.data == ["a", "v"] and voc.model == "lcnn"
    plain, _ = compare_recipes.recipe_config(["--data", "a"], "lcnn", 1, vocoded=["v"])
    assert plain.data == ["a"]  # only the recipes marked vocoded add the vocoded folders
    with pytest.raises(ValueError, match="trains on --vocoded-data too"):
        compare_recipes.recipe_config(["--data", "a"], "lcnn_vocoded", 1)


def test_compare_table(demo_features, tmp_path, capsys):
    out = tmp_path / "cmp"
    per_run, table = compare_recipes.main([
        "--data", str(demo_features["train"]), "--test", str(demo_features["dev"]),
        "--recipes", "baseline,calibrated,class_weighted", "--seeds", "1,2", "--out", str(out),
        "--weights", "none", "--epochs", "1", "--batch-size", "8"])
    # baseline and calibrated train identically: one set of runs, judged at two thresholds
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["baseline", "class_weighted"]
    assert len(per_run) == 6 and list(table.index) == [("dev", "baseline"), ("dev", "calibrated"),
                                                       ("dev", "class_weighted")]
    for _, r in per_run.iterrows():
        if r["recipe"] == "baseline":
            assert r["threshold"] == 0.5
        else:
            saved = json.loads((Path(r["run"]) / "threshold.json").read_text())
            assert r["threshold"] == saved["best"]["threshold"]
    b = per_run[per_run["recipe"] == "baseline"]
    assert table.loc[("dev", "baseline"), "f1_mean"] == pytest.approx(b["f1"].mean())
    assert table.loc[("dev", "baseline"), "eer_std"] == pytest.approx(b["eer"].std(ddof=1))
    c = per_run[per_run["recipe"] == "calibrated"]
    assert list(c["eer"]) == list(b["eer"])  # same models, same EER
    config = json.loads((out / "class_weighted" / "seed2" / "config.json").read_text())
    assert config["args"]["class_weight"] == "balanced" and config["args"]["seed"] == 2
    assert config["args"]["split_seed"] == 42  # every seed and recipe: the same 80/20 split
    md = (out / "compare.md").read_text()
    assert md.startswith("`python scripts/compare_recipes.py") and "| class_weighted |" in md
    assert "| bonafide accepted |" in md and "bonafide_recall_mean" in table.columns
    assert "positive class = spoof" in capsys.readouterr().out
    # a second call reuses the finished runs
    stamp = (out / "baseline" / "seed1" / "model.keras").stat().st_mtime_ns
    compare_recipes.main(["--data", str(demo_features["train"]), "--test",
                          str(demo_features["dev"]), "--recipes", "baseline", "--seeds", "1",
                          "--out", str(out), "--weights", "none", "--epochs", "1",
                          "--batch-size", "8"])
    assert (out / "baseline" / "seed1" / "model.keras").stat().st_mtime_ns == stamp


def test_flags_that_do_not_fit_a_recipe_are_refused_before_training(tmp_path):
    """Every recipe's flags are checked up front (a --preset for Whisper rows next to an LCNN
    row stops at once, not after the first recipe's runs)."""
    with pytest.raises(SystemExit, match="--preset applies to --model whisper and aasist, not "
                                         "to lcnn"):
        compare_recipes.main(["--data", "d", "--test", "t", "--recipes", "whisper,lcnn",
                              "--preset", "random:mini", "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_bad_recipe_and_missing_test(capsys):
    with pytest.raises(SystemExit):
        compare_recipes.main(["--recipes", "magic", "--test", "x"])
    assert "unknown recipe(s) ['magic']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_recipes.main([])
    assert "--test is required" in capsys.readouterr().err


def test_model_families_data_sources_and_the_baseline_row(demo_features, tmp_path):
    """LFCC-GMM and LCNN rows, vocoded data only for the recipes marked so, two test folders."""
    import make_vocoded_spoofs as V
    import preprocess

    sources = V.bonafide_sources(manifest=[demo_features["train"]]).iloc[:4]
    V.run(sources, tmp_path / "voc", ("world", "gl_mel8"), workers=1, progress=False)
    preprocess.preprocess(tmp_path / "voc" / "labels.csv", tmp_path / "voc", tmp_path / "vocf",
                          workers=1, progress=False)
    out = tmp_path / "cmp"
    per_run, table = compare_recipes.main([
        "--data", str(demo_features["train"]), "--vocoded-data", str(tmp_path / "vocf"),
        "--test", str(demo_features["dev"]), "--test", str(demo_features["train"]),
        "--recipes", "lfcc_gmm,lcnn,lcnn_vocoded", "--seeds", "1", "--out", str(out),
        "--epochs", "1", "--batch-size", "8"])
    assert set(table.index) == {(t, r) for t in ("dev", "train")
                                for r in ("lfcc_gmm", "lcnn", "lcnn_vocoded")}
    assert (out / "lfcc_gmm" / "seed1" / "gmm.npz").exists()
    splits = {r: pd.read_csv(out / r / "seed1" / "split.csv") for r in ("lcnn", "lcnn_vocoded")}
    assert set(splits["lcnn"]["source"]) == {str(demo_features["train"])}
    assert str(tmp_path / "vocf") in set(splits["lcnn_vocoded"]["source"])
    assert per_run["eer"].between(0, 1).all() and len(per_run) == 6
    md = (out / "compare.md").read_text()
    assert "**dev**" in md and "**train**" in md and "| lfcc_gmm | calibrated |" in md
