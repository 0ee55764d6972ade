"""Choose recipes by what they do out of domain: train on some sources, test on the ones left out.

    python scripts/leave_sources_out.py --preset models/whisper_base \\
        --data diverse=../shared/data/diverse_speech/manifest.csv \\
        --data asvspoof=../shared/data/asvspoof2019_la_mini/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt:../shared/data/asvspoof2019_la_mini/LA/ASVspoof2019_LA_train/flac \\
        --data wavefake=../shared/data/wavefake_ljspeech/labels.csv \\
        --train-only piper=data/tts/piper/labels.csv:data/tts/piper/flac \\
        --folds 4 --seeds 1 2 3 --out runs/leave_out/base

A **source** is a group of recordings that must never be on both sides of a split: a corpus of
genuine speech, or one synthesizer or voice-conversion system. Each ``--data NAME=PROTOCOL
[:AUDIO_DIR]`` (any protocol preprocess.py reads; relative files against AUDIO_DIR, default the
protocol's folder) gives sources by its ``system`` column when it has one (diverse_speech's
manifest: the corpus or system of every file), else ``NAME`` for its bonafide files and the
attack for its spoofs (``asvspoof:A01``). Sources that may share speakers are joined into one
unit, which is never split: those published by one repository (its ``source_repo`` column: a
demo page's real reference recordings and the clones made from them), transitively, or else
a whole data set (ASVspoof's spoofs are of its bonafide speakers, WaveFake's of LJSpeech). The
units are dealt into ``--folds`` folds (largest first, each to the fold holding the least of
the classes it has, ties by a seeded shuffle), so every fold tests on genuine speech and
spoofs whose corpora, systems and speakers the recipe never saw, and trains on the others.
``--train-only`` sources are always in training (e.g. spoofs the project makes itself);
``--test-only`` sources always left out.

The recipe measured is the one `scripts/train_offline.py` trains by default
(`deepfake_detector.training.probe`): the frozen encoder of a Whisper preset
(`scripts/import_whisper.py`) embeds every recording (the mean over time of the encoder's
output on each window, averaged over at most `probe.MAX_WINDOWS` windows; computed once per
file and preset, kept in ``<out>/embeddings.npz`` with a record of what made it, verified when
reused), and a logistic-regression probe (standardized features, classes balanced, inverse L2
strength ``--c``) is fitted on the training sources. As the run would, the probe chooses its
**own threshold** at the EER point of a random 20% of its training recordings (held out of the
fit), and that threshold is applied unchanged to the left-out sources: ``accepted`` is the
share of a left-out genuine source called bonafide there (what a user lives with), ``detected``
the share of a left-out spoof system called spoof. EER is pooled over each fold's left-out
recordings.

It also measures what abstaining buys on the left-out recordings, as a run could abstain:
leaving unanswered those nearest its threshold (answering the `COVERAGES` shares farthest from
it), or those its familiarity reference (`deepfake_detector.familiarity`, fitted on the
embeddings as train_offline.py fits it) calls unfamiliar.

Writes ``<out>/results.csv`` (one row per seed, fold and left-out source),
``<out>/selective.csv`` (one row per seed, fold, rule and coverage: share answered, share of
them wrong, genuine accepted and spoofs detected among them, share wrong among the rest) and
``<out>/summary.md`` (per source: accepted or detected, mean and spread over seeds; per fold:
EER; abstaining), and prints the summary.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import protocols  # noqa: E402
from deepfake_detector.evaluation import metrics  # noqa: E402
from deepfake_detector.training import probe  # noqa: E402
from deepfake_detector.atomic import write_text_atomic  # noqa: E402
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402

# -----------------------------------------------------------------------------
FOLDS = 4
SEEDS = (1, 2, 3)
COVERAGES = (1.0, 0.9, 0.7, 0.5)  # shares answered when abstaining nearest the threshold
# -----------------------------------------------------------------------------


def read_source(spec, role="data"):
    """One ``NAME=PROTOCOL[:AUDIO_DIR]`` argument -> a table of its recordings: ``path``,
    ``label``, ``source`` (module docstring), ``data`` (NAME) and ``role``."""
    if "=" not in spec:
        raise ValueError(f"--{role} {spec}: expected NAME=PROTOCOL[:AUDIO_DIR]")
    name, rest = spec.split("=", 1)
    protocol, _, audio = rest.partition(":")
    protocol = Path(protocol)
    audio = Path(audio) if audio else protocol.parent
    df = protocols.parse_protocol(protocol)
    systems = repos = None
    if protocol.suffix.lower() == ".csv":
        raw = pd.read_csv(protocol, dtype=str, keep_default_na=False)
        raw.columns = [c.strip().lower() for c in raw.columns]
        if "system" in raw.columns and len(raw) == len(df):
            systems = list(raw["system"])
            if "source_repo" in raw.columns:
                repos = [f"{name}:repo:{r}" for r in raw["source_repo"]]
    if systems is None:
        systems = [name if lab == "bonafide" else a for lab, a in zip(df["label"], df["attack"])]
    return pd.DataFrame({
        "path": [str(protocols.audio_path(row, audio)) for row in df.to_dict("records")],
        "label": df["label"].to_numpy(), "source": [f"{name}:{s}" for s in systems],
        # what links sources that may share speakers: the repository a file came from (a
        # demo page's real references and its clones), else the whole data set (ASVspoof's
        # spoofs are of its bonafide speakers, WaveFake's of LJSpeech)
        "link": repos or f"{name}:data", "data": name, "role": role,
        "format": protocols.detect_format(protocol)})


def units(table):
    """Sources joined into units that must stay on one side of every split: sources that
    share a ``link`` (a repository, a data set), transitively (a system published in two
    repositories joins them). Returns {source: unit name}."""
    parent = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    pairs = set(zip(table["source"], table["link"]))
    for source, link in pairs:
        parent[find(source)] = find(link)
    names = {}  # unit -> its links, shown as data set:repository (or data set:data)
    for source, link in pairs:
        names.setdefault(find(source), set()).add(f"{link.split(':')[0]}:{link.split(':')[-1]}")
    return {source: " + ".join(sorted(names[find(source)])) for source, _ in pairs}


def deal_folds(table, n_folds, seed):
    """Assign every unit of sources (`units`: never a recording alone, never one source of
    linked ones) to a fold, so that no corpus, synthesizer or shared speaker is on both sides
    of any split; largest units first, each to the fold that holds the least of the classes
    the unit has (seeded ties). Every fold must test on both classes.

    Parameters
    ----------
    table : pandas.DataFrame
        ``source``, ``link``, ``label`` and ``role`` columns (`read_source`); ``train-only``
        sources get fold -1 (always trained on), ``test-only`` ones fold -2 (always left out).
    n_folds : int
    seed : int

    Returns
    -------
    fold : dict of str -> int
        Source -> fold.

    Raises
    ------
    ValueError
        Too few independent units for ``n_folds`` folds with both classes in each.
    """
    rng = np.random.default_rng(seed)
    fold = {}
    for role, value in (("train-only", -1), ("test-only", -2)):
        fold.update({s: value for s in table.loc[table["role"] == role, "source"]})
    dealt = table[table["role"] == "data"]
    unit_of = units(dealt)
    counts = pd.crosstab(dealt["source"].map(unit_of), dealt["label"]).reindex(
        columns=["bonafide", "spoof"], fill_value=0)
    total = counts.sum().clip(lower=1).to_numpy()
    order = counts.index[rng.permutation(len(counts))]
    order = sorted(order, key=lambda u: -counts.loc[u].sum())  # stable: largest first
    load = np.zeros((n_folds, 2))
    place = {}
    for u in order:
        n = counts.loc[u].to_numpy()
        cost = (load / total) @ (n / total)  # the fold with least of the classes this unit has
        k = int(np.argmin(cost + rng.random(n_folds) * 1e-9))
        place[u] = k
        load[k] += counts.loc[u].to_numpy()
    if (load == 0).any():
        raise ValueError(f"{len(counts)} independent units of sources cannot give {n_folds} "
                         "folds with both bonafide and spoof recordings: give fewer --folds "
                         "or more sources")
    fold.update({s: place[unit_of[s]] for s in unit_of})
    return fold


def probe_fold(x, y, train, test, seed, c=probe.PROBE_C, expert=None, domain=None):
    """Fit the probe on ``train`` (`probe.fit_probe`: its threshold from a held-out share of
    them), score ``test``. With ``expert`` (log-odds of every row) the gated fusion
    (`probe.fused_logits`), its gate fitted on ``domain`` (the expert's own corpus) among the
    training rows (none there: the probe alone). Returns P(spoof) of the test rows, the
    threshold, and their unfamiliarity (`familiarity`, fitted as the run fits it: on the
    embeddings of the probe's fitted and validation rows)."""
    from scipy.special import expit

    from deepfake_detector import familiarity

    rows = np.flatnonzero(train)
    fitted = probe.fit_probe(x[rows], y[rows], seed, c)
    fam = familiarity.fit(x[rows[fitted["fit_rows"]]], x[rows[fitted["val_rows"]]])
    u = familiarity.distances(fam, x[test]) / fam["threshold"]
    if expert is None:
        return fitted["probe"].predict_proba(x[test])[:, 1], fitted["threshold"], u
    gate = probe.fit_gate(x[rows], domain[rows]) if domain[rows].any() else None
    return expit(probe.fused_logits(fitted, gate, x[test], expert[test])), 0.5, u


def selective_rows(p, threshold, u, t):
    """What abstaining buys on one fold's left-out recordings (P(spoof) ``p``, unfamiliarity
    ``u``, targets ``t``): answering only the `COVERAGES` shares farthest from the threshold
    (in log-odds), only the familiar ones (``u`` <= 1), or only those outside a probe run's
    uncertain band (`probe.UNCERTAIN_MARGIN`); per rule and coverage, the share
    answered, the share of those answered wrongly, genuine accepted and spoofs detected among
    them, and the share wrong among the rest."""
    from scipy.special import logit

    z = logit(np.clip(p, 1e-12, 1 - 1e-12)) - logit(threshold)
    wrong = (z >= 0) != (t == 1)
    order = np.argsort(-np.abs(z), kind="stable")
    picks = [("margin", cov, order[:int(round(cov * len(z)))]) for cov in COVERAGES]
    picks.append(("familiar", None, np.flatnonzero(u <= 1)))
    # the band a probe run shows as uncertain (P(spoof) within it of the threshold)
    picks.append(("band", probe.UNCERTAIN_MARGIN,
                  np.flatnonzero(np.abs(p - threshold) >= probe.UNCERTAIN_MARGIN)))
    rows = []
    for rule, cov, keep in picks:
        mask = np.zeros(len(z), bool)
        mask[keep] = True
        rows.append({"rule": rule, "coverage": cov, "answered": mask.mean(),
                     "wrong": wrong[mask].mean() if mask.any() else np.nan,
                     "accepted": np.mean(z[mask & (t == 0)] < 0) if (mask & (t == 0)).any()
                     else np.nan,
                     "detected": np.mean(z[mask & (t == 1)] >= 0) if (mask & (t == 1)).any()
                     else np.nan,
                     "wrong_abstained": wrong[~mask].mean() if (~mask).any() else np.nan})
    return rows


def evaluate(table, x, n_folds, seeds, c=probe.PROBE_C, expert=None):
    """Every seed and fold: the per-source rows of results.csv (``expert``: `probe_fold`) and
    the rows of selective.csv (`selective_rows`)."""
    y = (table["label"] == "spoof").to_numpy().astype(int)
    rows, selective = [], []
    unit_of = units(table[table["role"] == "data"])  # the same for every seed
    domain = (table["format"] == "asvspoof2019").to_numpy()
    for seed in seeds:
        fold = deal_folds(table, n_folds, seed)
        folds = table["source"].map(fold).to_numpy()
        for k in range(n_folds):
            test = (folds == k) | (folds == -2)
            train = ~test
            p, threshold, u = probe_fold(x, y, train, test, seed, c, expert, domain)
            t = y[test]
            selective += [{"seed": seed, "fold": k, **r}
                          for r in selective_rows(p, threshold, u, t)]
            eer = metrics.compute_eer(-p[t == 0], -p[t == 1])[0]
            for source in pd.unique(table.loc[test, "source"]):
                mine = (table.loc[test, "source"] == source).to_numpy()
                label = table.loc[test, "label"].to_numpy()[mine][0]
                called_spoof = float(np.mean(p[mine] >= threshold))
                rows.append({"seed": seed, "fold": k, "source": source, "label": label,
                             "unit": unit_of.get(source, "-"),
                             "n": int(mine.sum()), "threshold": threshold, "fold_eer": eer,
                             "accepted" if label == "bonafide" else "detected":
                                 1 - called_spoof if label == "bonafide" else called_spoof})
    return pd.DataFrame(rows), pd.DataFrame(selective)


def summarize(results, selective=None):
    """The summary.md text: per source, then the folds' EER, then what abstaining buys (the
    means over seeds and folds of ``selective``)."""
    lines = ["| left-out source | label | files | accepted (genuine) / detected (spoof) |",
             "|---|---|---|---|"]
    for (source, label), g in results.groupby(["source", "label"], sort=True):
        col = "accepted" if label == "bonafide" else "detected"
        lines.append(f"| {source} | {label} | {int(g['n'].iloc[0])} | "
                     f"{100 * g[col].mean():.1f}% +- {100 * g[col].std(ddof=0):.1f} |")
    per_fold = results.groupby(["seed", "fold"])["fold_eer"].first()
    shares = {}
    for label, col in (("bonafide", "accepted"), ("spoof", "detected")):
        part = results[results["label"] == label]
        weights = part["n"] / part.groupby("seed")["n"].transform("sum")
        shares[col] = (part[col] * weights).groupby(part["seed"]).sum()
    lines += ["", f"EER of the left-out folds: mean {100 * per_fold.mean():.1f}% (folds "
                  f"{100 * per_fold.min():.1f}-{100 * per_fold.max():.1f}%); at each run's own "
                  "threshold, genuine recordings accepted: "
                  f"{100 * shares['accepted'].mean():.1f}% (seeds "
                  f"{100 * shares['accepted'].min():.1f}-{100 * shares['accepted'].max():.1f}%), "
                  f"spoofs detected: {100 * shares['detected'].mean():.1f}% (seeds "
                  f"{100 * shares['detected'].min():.1f}-{100 * shares['detected'].max():.1f}%)"]
    if selective is not None and len(selective):
        m = selective.groupby(["rule", "coverage"], dropna=False).mean(numeric_only=True)
        margin = m.loc["margin"].sort_index(ascending=False)
        fam, band = m.loc["familiar"].iloc[0], m.loc["band"].iloc[0]
        lines += ["", "Abstaining (share of the left-out recordings answered -> share of them "
                      "answered wrongly): nearest the threshold left unanswered: " + ", ".join(
                          f"{100 * r.answered:.0f}% -> {100 * r.wrong:.1f}%"
                          for r in margin.itertuples()) + "; unfamiliar ones (unfamiliarity "
                      f"above 1) left unanswered: {100 * fam['answered']:.1f}% -> "
                      f"{100 * fam['wrong']:.1f}% (wrong among those left: "
                      f"{100 * fam['wrong_abstained']:.1f}%); P(spoof) within "
                      f"{probe.UNCERTAIN_MARGIN:g} of the threshold left unanswered: "
                      f"{100 * band['answered']:.1f}% -> {100 * band['wrong']:.1f}% (wrong among "
                      f"those left: {100 * band['wrong_abstained']:.1f}%)"]
    return "\n".join(lines) + "\n"


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--preset", required=True,
                    help="a Whisper preset folder (scripts/import_whisper.py) whose frozen "
                         "encoder embeds every recording")
    ap.add_argument("--data", action="append", default=[], metavar="NAME=PROTOCOL[:AUDIO]",
                    help="labelled recordings whose sources are dealt into folds (repeat)")
    ap.add_argument("--train-only", action="append", default=[], metavar="NAME=PROTOCOL[:AUDIO]",
                    help="sources always trained on, never left out (repeat)")
    ap.add_argument("--test-only", action="append", default=[], metavar="NAME=PROTOCOL[:AUDIO]",
                    help="sources always left out, never trained on (repeat)")
    ap.add_argument("--folds", type=number(int, 2, 50), default=FOLDS,
                    help="folds of bonafide and of spoof sources")
    ap.add_argument("--seeds", type=number(int, 0), nargs="+", default=list(SEEDS),
                    help="seeds of the dealing and of the validation part")
    ap.add_argument("--c", type=number(float, 0, above=True), default=probe.PROBE_C,
                    help="inverse L2 strength of the probe (scikit-learn's C on standardized "
                         "features; smaller = simpler)")
    ap.add_argument("--fuse", metavar="RUN",
                    help="measure the gated fusion of the probe with this run (an imported "
                         "AASIST, scripts/import_aasist.py), as train_offline.py --fuse makes "
                         "it; its gate learns the expert's corpus (ASVspoof 2019 protocols) "
                         "from the training sources")
    ap.add_argument("--out", required=True, help="folder for embeddings, results.csv, "
                                                 "summary.md")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        table = pd.concat([read_source(s, role) for role, specs in
                           (("data", args.data), ("train-only", args.train_only),
                            ("test-only", args.test_only)) for s in specs], ignore_index=True)
        if not args.data:
            raise ValueError("give at least one --data")
        deal_folds(table, args.folds, args.seeds[0])  # enough sources: checked before work
        x = probe.cached_embeddings(list(table["path"]), args.preset, args.out,
                                    not args.quiet)[:, 0]
        expert = probe.expert_logits(list(table["path"]), args.fuse, args.out,
                                     not args.quiet) if args.fuse else None
    except (ValueError, FileNotFoundError, protocols.ProtocolError) as e:
        raise SystemExit(f"error: {e}") from None
    keep = np.isfinite(x).all(axis=1) & (np.isfinite(expert) if args.fuse else True)
    table, x = table[keep].reset_index(drop=True), x[keep]
    results, selective = evaluate(table, x, args.folds, args.seeds, args.c,
                                  None if expert is None else expert[keep])
    out = Path(args.out)
    write_text_atomic(out / "results.csv", results.to_csv(index=False))
    write_text_atomic(out / "selective.csv", selective.to_csv(index=False))
    text = summarize(results, selective)
    write_text_atomic(out / "summary.md", text)
    print(text, end="")
    return results


if __name__ == "__main__":
    main()
