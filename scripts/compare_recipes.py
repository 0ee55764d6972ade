"""Train and evaluate several recipes (model families, training options, data sources), several
seeds each, on one or more test folders, and print one table per test folder.

A recipe is a set of train.py flags (so anything train.py can do can be compared), the data it
trains on (the common ``--data``, plus, for the recipes marked so, ``--vocoded-data``,
``--tts-data`` (scripts/make_tts_spoofs.py) and ``--augmented-data`` (augmented views,
scripts/degrade_audio.py --views)) and the
decision threshold it is judged at: 0.5, or the threshold calibrated on the validation data. The
``lfcc_gmm`` recipe is the ASVspoof LFCC-GMM baseline (scripts/lfcc_gmm.py), trained on the same
split and scored into the same reports. Every run is evaluated on every ``--test`` folder; the
tables give mean +- standard deviation over seeds of the EER (bonafide = target), the min t-DCF
(with ``--asv-scores``), accuracy, precision, recall and F1 with **spoof as the positive class**
at the recipe's threshold, and the share of bonafide utterances accepted there (on spoof-heavy
data, calling everything spoof scores a high F1 and accepts no one).

Recipes that train identically (``baseline`` and ``calibrated`` differ only in the threshold)
share their runs. Finished runs are kept, so an interrupted comparison resumes.

Example (ASVspoof 2019 LA, official partitions, preprocessed with preprocess.py)::

    python scripts/compare_recipes.py --data data/features/train --val-data data/features/dev \\
        --test data/features/eval --seeds 1,2,3 --out runs/compare \\
        --asv-scores data/LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt

    python scripts/compare_recipes.py --list                  # what each recipe is
"""

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from deepfake_detector.training import config as C  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402
import evaluate  # noqa: E402
import lfcc_gmm  # noqa: E402
from deepfake_detector import models as model  # noqa: E402
from deepfake_detector.evaluation import report  # noqa: E402
from deepfake_detector import runs  # noqa: E402
import train  # noqa: E402

# -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One row of the comparison."""

    what: str
    flags: str = ""  # train.py flags
    at: str = "calibrated"  # the threshold it is judged at: "0.5" or "calibrated"
    vocoded: bool = False  # also trains on --vocoded-data
    kind: str = "keras"  # "keras" (train.py) or "lfcc_gmm" (scripts/lfcc_gmm.py)
    extra: tuple = ()  # also trains on these data groups: "tts" (--tts-data), "augmented"

    def groups(self):
        """The extra data groups it trains on, in order."""
        return (("vocoded",) if self.vocoded else ()) + tuple(self.extra)


AASIST_FT = "--model aasist --preset AASIST-L --init AASIST-L --freeze-encoder --batch-size 32"
RECIPES = {
    "baseline": Recipe("design card, decision at P(spoof) >= 0.5", at="0.5"),
    "calibrated": Recipe("design card, EER threshold chosen on validation"),
    "class_weighted": Recipe("balanced class weights, calibrated", "--class-weight balanced"),
    "balanced_batches": Recipe("half bonafide / half spoof batches, calibrated",
                               "--balanced-batches"),
    "fine_tuned": Recipe("+ top 2 MBConv blocks fine-tuned 5 epochs at 1e-5, calibrated",
                         "--fine-tune-blocks 2"),
    "augmented": Recipe("SpecAugment, random crop, noise, low-pass; calibrated",
                        "--freq-mask 16 --time-mask 16 --random-crop --noise-snr 10,40 "
                        "--lowpass 3400,7000"),
    "lfcc_gmm": Recipe("LFCC-GMM, the ASVspoof 2019 baseline (scripts/lfcc_gmm.py), calibrated",
                       kind="lfcc_gmm"),
    "lcnn": Recipe("LCNN trained from scratch, calibrated", "--model lcnn"),
    "lcnn_vocoded": Recipe("LCNN + vocoded spoofs of the bonafide training utterances",
                           "--model lcnn", vocoded=True),
    "lcnn_vocoded_spec": Recipe("LCNN + vocoded spoofs + SpecAugment",
                                "--model lcnn --freq-mask 16 --time-mask 16", vocoded=True),
    "lcnn_vocoded_aug": Recipe("LCNN + vocoded spoofs + random crop, noise, low-pass and "
                               "SpecAugment", "--model lcnn --random-crop --noise-snr 10,40 "
                               "--lowpass 3400,7800 --freq-mask 16 --time-mask 16", vocoded=True),
    "lcnn_robust": Recipe("lcnn_vocoded_spec + Debian TTS spoofs + RawBoost/codec/channel "
                          "views (mel arrays of scripts/degrade_audio.py --views)",
                          "--model lcnn --freq-mask 16 --time-mask 16", vocoded=True,
                          extra=("tts", "augmented")),
    # the Whisper rows read --features waveform folders; choose the encoder with a common
    # --preset (e.g. one written by scripts/import_whisper.py)
    "whisper": Recipe("frozen Whisper encoder + the design-card head, calibrated",
                      "--model whisper"),
    "whisper_vocoded": Recipe("frozen Whisper encoder + vocoded spoofs", "--model whisper",
                              vocoded=True),
    "whisper_ft": Recipe("Whisper, then its top 2 transformer layers fine-tuned 5 epochs at 1e-5",
                         "--model whisper --fine-tune-blocks 2"),
    "whisper_vocoded_ft": Recipe("whisper_ft + vocoded spoofs",
                                 "--model whisper --fine-tune-blocks 2", vocoded=True),
    # the robust recipes (docs/recipes.md): more synthesizers, and RawBoost + codec/channel
    # views of every training utterance, cached like any folder
    "whisper_tts": Recipe("frozen Whisper + vocoded spoofs + Debian TTS spoofs",
                          "--model whisper", vocoded=True, extra=("tts",)),
    "whisper_robust": Recipe("whisper_tts + RawBoost/codec/channel views of all of it",
                             "--model whisper", vocoded=True, extra=("tts", "augmented")),
    "whisper_tts_ft": Recipe("whisper_tts, top 2 layers fine-tuned",
                             "--model whisper --fine-tune-blocks 2", vocoded=True,
                             extra=("tts",)),
    # 1 fine-tuning epoch on 3.4 times the utterances: 2/3 of the steps of whisper_vocoded_ft
    "whisper_robust_ft": Recipe("whisper_robust, top 2 layers fine-tuned 1 epoch",
                                "--model whisper --fine-tune-blocks 2 --fine-tune-epochs 1",
                                vocoded=True, extra=("tts", "augmented")),
    # the imported AASIST-L (scripts/import_aasist.py; found through $AASIST_WEIGHTS or
    # downloaded) with its encoder frozen and cached: only the graph attention back end trains
    "aasist_l_vocoded": Recipe("imported AASIST-L, graph back end fine-tuned on the data + "
                               "vocoded spoofs (encoder frozen, cached)", AASIST_FT,
                               vocoded=True),
    "aasist_l_robust": Recipe("aasist_l_vocoded + Debian TTS spoofs + RawBoost/codec/channel "
                              "views", AASIST_FT, vocoded=True, extra=("tts", "augmented")),
}
DATA_GROUPS = {"vocoded": "--vocoded-data", "tts": "--tts-data", "augmented": "--augmented-data"}
METRICS = ("eer", "min_tdcf", "accuracy", "precision", "recall", "f1", "bonafide_recall")
# -----------------------------------------------------------------------------


def recipe_config(common, recipe, seed, vocoded=(), groups=None):
    """The checked `config.TrainConfig` of one recipe (the common flags, then the recipe's;
    ``vocoded`` folders, and those of ``groups`` ({"tts": [...], "augmented": [...]}), added to
    ``--data`` for the recipes that use them) and the seed of its split. ``seed`` seeds
    initialization and batch order; the 80/20 split (without --val-data) stays that of the
    common ``--seed`` for every recipe and seed."""
    recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
    given = {"vocoded": list(vocoded), **(groups or {})}
    extra = []
    for group in recipe.groups():
        if not given.get(group):
            raise ValueError(f"this recipe trains on {DATA_GROUPS[group]} too; give it")
        extra += [a for v in given[group] for a in ("--data", v)]
    args = train.build_parser().parse_args([*common, *extra, *shlex.split(recipe.flags)])
    cfg = C.make_config(C.from_args(args))
    return dataclasses.replace(cfg, seed=seed), cfg.seed


def run_key(cfg, split_seed, kind="keras"):
    """Runs with the same key train identically (the threshold is not part of training)."""
    k = {key: v for key, v in dataclasses.asdict(cfg).items()
         if key not in ("run", "overwrite", "quiet")}
    k["data"] = [str(Path(d).resolve()) for d in cfg.data]
    return json.dumps({**k, "split_seed": split_seed, "kind": kind}, sort_keys=True, default=str)


def train_run(recipe, cfg, split_seed, run, argv, verbose):
    """Train one recipe's run into ``run`` unless it is finished already."""
    if recipe.kind == "lfcc_gmm":
        if not (run / "gmm.npz").exists():
            lfcc_gmm.train(cfg.data, run, cfg.val_data, cfg.val_fraction, split_seed,
                           gmm_seed=cfg.seed, calibrate=cfg.calibrate, progress=verbose > 0)
    elif not runs.is_finished(run):
        train.train(cfg.data, run, cfg, verbose=verbose, split_seed=split_seed, argv=argv)


def score_run(recipe, run, test, lfcc_cache):
    """(table, source) of a run on a test folder."""
    if recipe.kind == "lfcc_gmm":
        return lfcc_gmm.scores(run, test, lfcc_cache)
    if runs.read_config(run)["args"].get("freeze_encoder"):  # one encoder pass for all seeds
        return report.scores_from_cache(run, test)
    return report.scores_from_model(run, test)


def compare(recipes, common, seeds, tests, out, asv_scores=None, verbose=0, vocoded=(),
            groups=None):
    """Train (or reuse) and evaluate every recipe x seed on every test folder.

    Parameters
    ----------
    recipes : list of str
        Keys of `RECIPES`.
    common : list of str
        train.py flags shared by every recipe (e.g. ``["--data", ..., "--weights", "none"]``).
    seeds : list of int
    tests : list of str or Path
        Preprocessed folders every run is evaluated on.
    out : str or Path
        Runs go to ``<out>/<first recipe that trains them>/seed<N>/``.
    vocoded : list of str
        Preprocessed folders of vocoded spoofs, added to the training data of the recipes
        marked ``vocoded``.
    groups : dict, optional
        {"tts": folders, "augmented": folders}: added for the recipes whose ``extra`` names
        them.

    Returns
    -------
    per_run : pandas.DataFrame
        One row per test x recipe x seed.
    table : pandas.DataFrame
        One row per test x recipe: mean and std of `METRICS`.
    """
    out, tests = Path(out), [str(t) for t in ([tests] if isinstance(tests, (str, Path))
                                               else tests)]
    trained, scored, lfcc_cache, rows = {}, {}, {}, []
    for name in recipes:
        recipe = RECIPES[name]
        for seed in seeds:
            cfg, split_seed = recipe_config(common, recipe, seed, vocoded, groups)
            key = run_key(cfg, split_seed, recipe.kind)
            if key not in trained:
                trained[key] = out / name / f"seed{seed}"
                print(f"{name} seed {seed} -> {trained[key]}", file=sys.stderr, flush=True)
                train_run(recipe, cfg, split_seed, trained[key],
                          ["compare_recipes.py", *common, *shlex.split(recipe.flags)], verbose)
            run = trained[key]
            for test in tests:
                if (run, test) not in scored:  # recipes sharing a run share one scoring pass
                    scored[run, test] = score_run(recipe, run, test, lfcc_cache)
                rows.append(judge(name, seed, run, test, scored[run, test], asv_scores))
    per_run = pd.DataFrame(rows)
    grouped = per_run.groupby(["test", "recipe"], sort=False)[list(METRICS)]
    table = grouped.mean().add_suffix("_mean").join(grouped.std().add_suffix("_std"))
    table.insert(0, "seeds", per_run.groupby(["test", "recipe"], sort=False).size())
    return per_run, table


def judge(name, seed, run, test, scored, asv_scores):
    """The report of one run on one test folder at its recipe's threshold, as a table row."""
    recipe = RECIPES[name]
    test_name = Path(test).resolve().name
    m = evaluate.evaluate(run, test, threshold=0.5 if recipe.at == "0.5" else None,
                          name=f"{test_name}_{recipe.at}", asv_scores=asv_scores, plots=False,
                          scored=scored)
    if recipe.at == "calibrated" and "calibrated" not in m["operating_points"]:
        raise ValueError(f"recipe {name} is judged at its calibrated threshold, but {run} has "
                         "none (was --calibrate none passed?)")
    chosen = m["operating_points"]["chosen"]
    return {"test": test_name, "recipe": name, "seed": seed, "run": str(run),
            "threshold_at": recipe.at, "threshold": m["threshold"]["value"], "eer": m["eer"],
            "min_tdcf": m["min_tdcf"]["min_tdcf"],
            **{k: chosen[k] for k in ("accuracy", "precision", "recall", "f1",
                                      "bonafide_recall")}}


def markdown(table, test):
    """The comparison on one test folder as a Markdown table: mean +- std over seeds."""
    def cell(row, k, pct):
        mean, std = row[f"{k}_mean"], row[f"{k}_std"]
        if pd.isna(mean):
            return "-"
        if pct:
            return f"{mean:.1%} ± {std:.1%}" if pd.notna(std) else f"{mean:.1%}"
        return f"{mean:.3f} ± {std:.3f}" if pd.notna(std) else f"{mean:.3f}"

    lines = ["| recipe | threshold | seeds | EER | min t-DCF | accuracy | precision | recall | F1 "
             "| bonafide accepted |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in table.loc[test].iterrows():
        cells = [cell(row, k, k == "eer") for k in METRICS]
        lines.append(f"| {name} | {RECIPES[name].at} | {int(row['seeds'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser():
    """The command line of compare_recipes.py (other flags go to train.py)."""
    ap = argparse.ArgumentParser(
        description="Train and evaluate recipes (several seeds each) and print one table per "
                    "test folder: EER (bonafide = target), min t-DCF, and accuracy / precision "
                    "/ recall / F1 with spoof as the positive class at each recipe's threshold. "
                    "Any other flag is passed to train.py for every recipe (e.g. --weights "
                    "none, --epochs 10).",
        formatter_class=HelpFormatter)
    ap.add_argument("--data", action="append",
                    help="preprocessed training folder; repeatable (default: "
                         "data/features/train)")
    ap.add_argument("--vocoded-data", action="append", default=[],
                    help="preprocessed folder of vocoded spoofs (scripts/make_vocoded_spoofs.py) "
                         "added to the training data of the recipes that use it; repeatable")
    ap.add_argument("--tts-data", action="append", default=[],
                    help="preprocessed folder of synthesizer spoofs (scripts/make_tts_spoofs.py) "
                         "for the recipes that use it; repeatable")
    ap.add_argument("--augmented-data", action="append", default=[],
                    help="preprocessed folder of augmented views of the training data "
                         "(scripts/degrade_audio.py --views) for the recipes that use it; "
                         "repeatable")
    ap.add_argument("--val-data", action="append",
                    help="validation folder (default: 80/20 split of the training data)")
    ap.add_argument("--test", action="append",
                    help="preprocessed folder every run is evaluated on (required; repeatable, "
                         "one table each)")
    ap.add_argument("--recipes", default=",".join(r for r in RECIPES if r.startswith(
        ("baseline", "calibrated", "class", "balanced", "fine", "augmented"))),
                    help=f"comma-separated recipes to compare, of: {', '.join(RECIPES)}")
    ap.add_argument("--seeds", default="1,2,3", help="seeds per recipe")
    ap.add_argument("--out", default="runs/compare", help="folder of the runs and the tables")
    ap.add_argument("--asv-scores", help="ASVspoof 2019 ASV score file of --test, for min t-DCF")
    ap.add_argument("--list", action="store_true", help="print the recipes and exit")
    ap.add_argument("--verbose", action="store_true", help="per-epoch training output")
    return ap


def write_tables(per_run, table, out, command, seeds):
    """compare_runs.csv, compare.csv and compare.md; returns the Markdown text."""
    out.mkdir(parents=True, exist_ok=True)
    per_run.to_csv(out / "compare_runs.csv", index=False)
    table.to_csv(out / "compare.csv")
    text = "\n\n".join(f"**{test}** ({len(seeds)} seeds, mean ± std)\n\n{markdown(table, test)}"
                       for test in table.index.get_level_values(0).unique())
    (out / "compare.md").write_text(f"`{command}`\n\n{text}\n")
    return text


def main(argv=None):
    ap = build_parser()
    args, train_flags = ap.parse_known_args(argv)
    if args.list:
        for name, r in RECIPES.items():
            data = "".join(f" + {DATA_GROUPS[g]}" for g in r.groups())
            how = "scripts/lfcc_gmm.py" if r.kind == "lfcc_gmm" else \
                f"train.py {r.flags or '(defaults)'}"
            print(f"{name:>17s}: {r.what}\n{'':>19s}{how}{data}; judged at {r.at}")
        return None
    if not args.test:
        ap.error("--test is required (the preprocessed folder to evaluate every run on)")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    common = [*(a for d in args.data or ["data/features/train"] for a in ("--data", d)),
              *(a for d in args.val_data or [] for a in ("--val-data", d)), "--quiet",
              *train_flags]
    groups = {"tts": args.tts_data, "augmented": args.augmented_data}
    try:
        seeds = C.parse_seeds(args.seeds)
        for name in recipes:  # flags and data checked up front, with each recipe's own
            try:
                recipe_config(common, name, seeds[0], args.vocoded_data, groups)
            except ValueError as e:
                raise ValueError(f"recipe {name}: {e}") from None
        per_run, table = compare(recipes, common, seeds, args.test, args.out, args.asv_scores,
                                 2 if args.verbose else 0, args.vocoded_data, groups)
    except (model.WeightsUnavailable, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    command = "python scripts/compare_recipes.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    text = write_tables(per_run, table, Path(args.out), command, seeds)
    print(f"\n{len(seeds)} seeds ({args.seeds}); mean ± std over seeds; EER bonafide = target; "
          "precision/recall/F1 positive class = spoof\n")
    print(text)
    out = Path(args.out)
    print(f"\nwritten: {out / 'compare.md'}, {out / 'compare.csv'}, {out / 'compare_runs.csv'}")
    return per_run, table


if __name__ == "__main__":
    main()
