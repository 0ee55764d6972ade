"""Train and evaluate several training recipes, several seeds each, and print one table.

Each recipe is a set of train.py flags (so anything train.py can do can be compared) plus the
decision threshold it is judged at: 0.5, or the threshold train.py calibrated on the validation
data. Every run is evaluated on a separate preprocessed folder (``--test``) with evaluate.py;
the table gives mean +- standard deviation over seeds of the EER (bonafide = target), the
min t-DCF (with ``--asv-scores``), accuracy, precision, recall and F1 with **spoof as the
positive class** at the recipe's threshold, and the share of bonafide utterances accepted there
(on spoof-heavy data, calling everything spoof scores a high F1 and accepts no one).

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
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

import config as C  # noqa: E402
import evaluate  # noqa: E402
import model  # noqa: E402
import report  # noqa: E402
import train  # noqa: E402

# -----------------------------------------------------------------------------
# name: (what it is, train.py flags, threshold it is judged at: "0.5" or "calibrated")
RECIPES = {
    "baseline": ("design card, decision at P(spoof) >= 0.5", "", "0.5"),
    "calibrated": ("design card, EER threshold chosen on validation", "", "calibrated"),
    "class_weighted": ("balanced class weights, calibrated", "--class-weight balanced",
                       "calibrated"),
    "balanced_batches": ("half bonafide / half spoof batches, calibrated",
                         "--balanced-batches", "calibrated"),
    "fine_tuned": ("+ top 2 MBConv blocks fine-tuned 5 epochs at 1e-5, calibrated",
                   "--fine-tune-blocks 2", "calibrated"),
    "augmented": ("SpecAugment, random crop, noise, low-pass; calibrated",
                  "--freq-mask 16 --time-mask 16 --random-crop --noise-snr 10,40 "
                  "--lowpass 3400,7000", "calibrated"),
}
METRICS = ("eer", "min_tdcf", "accuracy", "precision", "recall", "f1", "bonafide_recall")
# -----------------------------------------------------------------------------


def recipe_config(common, flags, seed):
    """The checked `config.TrainConfig` of one recipe (the common flags, then the recipe's) and
    the seed of its split. ``seed`` seeds initialization and batch order; the 80/20 split
    (without --val-data) stays that of the common ``--seed`` for every recipe and seed."""
    cfg = C.make_config(C.from_args(train.build_parser().parse_args([*common,
                                                                     *shlex.split(flags)])))
    return dataclasses.replace(cfg, seed=seed), cfg.seed


def run_key(cfg, split_seed):
    """Runs with the same key train identically (the threshold is not part of training)."""
    k = {key: v for key, v in dataclasses.asdict(cfg).items()
         if key not in ("run", "overwrite", "quiet")}
    k["data"] = str(Path(cfg.data).resolve())
    return json.dumps({**k, "split_seed": split_seed}, sort_keys=True, default=str)


def compare(recipes, common, seeds, test, out, asv_scores=None, verbose=0):
    """Train (or reuse) and evaluate every recipe x seed.

    Parameters
    ----------
    recipes : list of str
        Keys of `RECIPES`.
    common : list of str
        train.py flags shared by every recipe (e.g. ``["--data", ..., "--weights", "none"]``).
    seeds : list of int
    test : str or Path
        Preprocessed folder every run is evaluated on.
    out : str or Path
        Runs go to ``<out>/<first recipe that trains them>/seed<N>/``.

    Returns
    -------
    per_run : pandas.DataFrame
        One row per recipe x seed.
    table : pandas.DataFrame
        One row per recipe: mean and std of `METRICS`.
    """
    out = Path(out)
    trained = {}
    scored = {}  # run -> its scores on `test`: recipes sharing a run share one prediction pass
    rows = []
    for name in recipes:
        what, flags, judged_at = RECIPES[name]
        for seed in seeds:
            cfg, split_seed = recipe_config(common, flags, seed)
            key = run_key(cfg, split_seed)
            if key not in trained:
                run = out / name / f"seed{seed}"
                if not (run / "model.keras").exists():
                    print(f"training {name} seed {seed} -> {run}", file=sys.stderr, flush=True)
                    train.train(cfg.data, run, cfg, verbose=verbose, split_seed=split_seed,
                                argv=["compare_recipes.py", *common, *shlex.split(flags)])
                trained[key] = run
            run = trained[key]
            if run not in scored:
                scored[run] = report.scores_from_model(run, test)
            m = evaluate.evaluate(run, test, threshold=0.5 if judged_at == "0.5" else None,
                                  name=f"{Path(test).resolve().name}_{judged_at}",
                                  asv_scores=asv_scores, plots=False, scored=scored[run])
            if judged_at == "calibrated" and "calibrated" not in m["operating_points"]:
                raise ValueError(f"recipe {name} is judged at its calibrated threshold, but "
                                 f"{run} has none (was --calibrate none passed?)")
            chosen = m["operating_points"]["chosen"]
            rows.append({"recipe": name, "seed": seed, "run": str(run), "threshold_at": judged_at,
                         "threshold": m["threshold"]["value"], "eer": m["eer"],
                         "min_tdcf": m["min_tdcf"]["min_tdcf"],
                         **{k: chosen[k] for k in ("accuracy", "precision", "recall", "f1",
                                                   "bonafide_recall")}})
    per_run = pd.DataFrame(rows)
    grouped = per_run.groupby("recipe", sort=False)[list(METRICS)]
    table = grouped.mean().add_suffix("_mean").join(grouped.std().add_suffix("_std"))
    table.insert(0, "seeds", per_run.groupby("recipe", sort=False).size())
    return per_run, table


def markdown(table):
    """The comparison as a Markdown table: mean +- std over seeds."""
    def cell(row, k, pct):
        mean, std = row[f"{k}_mean"], row[f"{k}_std"]
        if pd.isna(mean):
            return "-"
        if pct:
            return f"{mean:.1%} ± {std:.1%}" if pd.notna(std) else f"{mean:.1%}"
        return f"{mean:.3f} ± {std:.3f}" if pd.notna(std) else f"{mean:.3f}"

    lines = ["| recipe | threshold | seeds | EER | min t-DCF | accuracy | precision | recall | F1 "
             "| bonafide accepted |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in table.iterrows():
        cells = [cell(row, k, k == "eer") for k in METRICS]
        lines.append(f"| {name} | {RECIPES[name][2]} | {int(row['seeds'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser():
    """The command line of compare_recipes.py (other flags go to train.py)."""
    ap = argparse.ArgumentParser(
        description="Train and evaluate training recipes (several seeds each) and print one "
                    "table: EER (bonafide = target), min t-DCF, and accuracy / precision / "
                    "recall / F1 with spoof as the positive class at each recipe's threshold. "
                    "Any other flag is passed to train.py for every recipe (e.g. --weights "
                    "none, --epochs 10).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="data/features/train", help="preprocessed training folder")
    ap.add_argument("--val-data", help="validation folder (default: 80/20 split of --data)")
    ap.add_argument("--test", help="preprocessed folder every run is evaluated on (required, "
                                   "e.g. the official dev or eval partition)")
    ap.add_argument("--recipes", default=",".join(RECIPES),
                    help=f"comma-separated recipes to compare, of: {', '.join(RECIPES)}")
    ap.add_argument("--seeds", default="1,2,3", help="seeds per recipe")
    ap.add_argument("--out", default="runs/compare", help="folder of the runs and the table")
    ap.add_argument("--asv-scores", help="ASVspoof 2019 ASV score file of --test, for min t-DCF")
    ap.add_argument("--list", action="store_true", help="print the recipes and exit")
    ap.add_argument("--verbose", action="store_true", help="per-epoch training output")
    return ap


def main(argv=None):
    ap = build_parser()
    args, train_flags = ap.parse_known_args(argv)
    if args.list:
        for name, (what, flags, at) in RECIPES.items():
            print(f"{name:>17s}: {what}\n{'':>19s}train.py {flags or '(defaults)'}; judged at "
                  f"{at}")
        return None
    if not args.test:
        ap.error("--test is required (the preprocessed folder to evaluate every run on)")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    common = ["--data", args.data, *(["--val-data", args.val_data] if args.val_data else []),
              "--quiet", *train_flags]
    try:
        seeds = C.parse_seeds(args.seeds)
        recipe_config(common, "", seeds[0])  # flags checked up front
        per_run, table = compare(recipes, common, seeds, args.test, args.out, args.asv_scores,
                                 verbose=2 if args.verbose else 0)
    except (model.WeightsUnavailable, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_run.to_csv(out / "compare_runs.csv", index=False)
    table.to_csv(out / "compare.csv")
    text = markdown(table)
    command = "python scripts/compare_recipes.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    (out / "compare.md").write_text(f"`{command}`\n\n{text}\n")
    print(f"\ntest data: {args.test}; {len(seeds)} seeds ({args.seeds}); mean ± std over seeds; "
          "EER bonafide = target; precision/recall/F1 positive class = spoof\n")
    print(text)
    print(f"\nwritten: {out / 'compare.md'}, {out / 'compare.csv'}, {out / 'compare_runs.csv'}")
    return per_run, table


if __name__ == "__main__":
    main()
