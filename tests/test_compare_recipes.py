"""scripts/compare_recipes.py: recipes x seeds -> one table."""

import json
from pathlib import Path

import pytest

import compare_recipes


def test_recipes_are_valid_train_flags():
    for name, (what, flags, judged_at) in compare_recipes.RECIPES.items():
        compare_recipes.recipe_config(["--weights", "none"], flags, 1)
        assert judged_at in ("0.5", "calibrated") and what
    fine, _ = compare_recipes.recipe_config([], compare_recipes.RECIPES["fine_tuned"][1], 1)
    aug, _ = compare_recipes.recipe_config([], compare_recipes.RECIPES["augmented"][1], 1)
    assert fine.fine_tune_blocks == 2 and aug.augmentation()["random_crop"]
    base, _ = compare_recipes.recipe_config([], "", 1)
    assert base.augmentation() is None and base.class_weight == "none"


def test_compare_table(demo_features, tmp_path, capsys):
    out = tmp_path / "cmp"
    per_run, table = compare_recipes.main([
        "--data", str(demo_features["train"]), "--test", str(demo_features["dev"]),
        "--recipes", "baseline,calibrated,class_weighted", "--seeds", "1,2", "--out", str(out),
        "--weights", "none", "--epochs", "1", "--batch-size", "8"])
    # baseline and calibrated train identically: one set of runs, judged at two thresholds
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["baseline", "class_weighted"]
    assert len(per_run) == 6 and list(table.index) == ["baseline", "calibrated", "class_weighted"]
    for _, r in per_run.iterrows():
        if r["recipe"] == "baseline":
            assert r["threshold"] == 0.5
        else:
            saved = json.loads((Path(r["run"]) / "threshold.json").read_text())
            assert r["threshold"] == saved["best"]["threshold"]
    b = per_run[per_run["recipe"] == "baseline"]
    assert table.loc["baseline", "f1_mean"] == pytest.approx(b["f1"].mean())
    assert table.loc["baseline", "eer_std"] == pytest.approx(b["eer"].std(ddof=1))
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


def test_bad_recipe_and_missing_test(capsys):
    with pytest.raises(SystemExit):
        compare_recipes.main(["--recipes", "magic", "--test", "x"])
    assert "unknown recipe(s) ['magic']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_recipes.main([])
    assert "--test is required" in capsys.readouterr().err
