"""How a detector's verdict on long recordings depends on the rule that joins its windows:
false alarms per hour of genuine speech, and spoofed stretches found inside genuine speech.

    python scripts/long_audio.py --run runs/aasist_l --run runs/probe_diverse \\
        --genuine ../shared/data/asvspoof2019_la_bonafide_extra/labels.csv \\
        --spoof ../shared/data/asvspoof2019_la_mini/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt:../shared/data/asvspoof2019_la_mini/LA/ASVspoof2019_LA_dev/flac \\
        --out runs/long_audio

predict.py scores a recording in windows of the run's length every `inference.HOP_SECONDS`
and joins them into one verdict. Which join is right for long audio is measured here. From the
genuine utterances of ``--genuine`` (its bonafide rows; any protocol preprocess.py reads) it
builds, for each of ``--lengths`` (seconds), ``--files`` long **genuine** recordings: utterances
drawn at random (seeded; none twice in one file), joined with `GAP_S` of silence; and as many
**spliced** ones: the same genuine recording with a **spoofed stretch** of about `STRETCH_S`
seconds (spoofed utterances of ``--spoof`` joined) inserted at a random point. Every file is
scored once per run (its windows' P(spoof) kept), then each rule of `RULES` decides at the run's
threshold (`deepfake_detector.aggregate`, the code predict.py and serve.py decide with):

- ``max``: the most spoof-like window;
- ``mean``: the mean of the windows' P(spoof) (a probe run's own);
- ``run:K``: at least K consecutive windows at or above the threshold (K windows of ~4 s every
  2 s cover about 2 + 2K seconds); ``run:4`` is the default of runs that name no rule.

With ``--short``, the rules are also compared on short recordings as they are (EER, genuine
accepted, spoofs detected), since a rule for long audio must not spoil the short case.

Writes ``<out>/audio/`` (the long files, FLAC), ``<out>/windows.csv`` (every window's P(spoof)
per run and file), ``<out>/results.csv`` (per run, rule and length: genuine files flagged,
spliced files detected, hours of genuine speech) and ``<out>/summary.md`` (false alarms per
hour of genuine speech: flagged genuine files / hours of them), and prints the summary.
``--reuse`` takes a run's windows from an earlier ``windows.csv`` in ``--out`` when it holds
every file of the command, instead of scoring again (to compare rules without re-scoring).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import aggregate, features, protocols  # noqa: E402
from deepfake_detector.atomic import atomic_output, write_text_atomic  # noqa: E402
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402

# -----------------------------------------------------------------------------
LENGTHS = (60, 300, 600)  # seconds of the long recordings
FILES = 3  # long genuine recordings per length (and as many spliced ones)
GAP_S = 0.3  # silence between joined utterances
STRETCH_S = 10.0  # seconds of spoofed speech spliced into a genuine recording
RULES = ("max", "mean", "run:2", "run:3", "run:4", "run:5")
SEED = 0
# -----------------------------------------------------------------------------


def labelled(spec):
    """The audio files of one ``PROTOCOL[:AUDIO_DIR]`` and their labels: two lists."""
    protocol, _, audio = str(spec).partition(":")
    rows = protocols.parse_protocol(protocol).to_dict("records")
    audio = Path(audio) if audio else Path(protocol).parent
    return [str(protocols.audio_path(row, audio)) for row in rows], [r["label"] for r in rows]


def utterances(spec, label):
    """The audio files of one ``PROTOCOL[:AUDIO_DIR]`` with ``label``: a list of paths."""
    paths, labels = labelled(spec)
    return [f for f, y in zip(paths, labels) if y == label]


def short_files(specs):
    """The recordings of ``--short`` as they are: a table ``file``, ``kind`` (``short``),
    ``label``, ``set`` (the protocol's file name)."""
    rows = []
    for spec in specs:
        paths, labels = labelled(spec)
        rows += [{"file": f, "kind": "short", "label": y,
                  "set": Path(str(spec).partition(":")[0]).name} for f, y in zip(paths, labels)]
    return pd.DataFrame(rows, columns=["file", "kind", "label", "set"])


def evaluate_short(files, windows, thresholds, rules=RULES):
    """Per run, rule and ``--short`` set: EER, and genuine recordings accepted and spoofs
    detected at the run's threshold (the rows of short.csv): what a rule does to recordings
    of one or a few windows, where most detectors are measured."""
    from scipy.special import logit

    from deepfake_detector.evaluation import metrics

    rows = []
    short = files[files["kind"] == "short"]
    for run, threshold in thresholds.items():
        mine = windows[windows["run"] == run].groupby("file")["p_spoof"]
        for rule in rules:
            p = {f: rule_logit(g.to_numpy(dtype=float), rule) for f, g in mine}
            for name, g in short.groupby("set", sort=False):
                z = g["file"].map(p).to_numpy(dtype=float)
                bona = (g["label"] == "bonafide").to_numpy()
                eer = metrics.compute_eer(-z[bona], -z[~bona])[0] if bona.any() and \
                    (~bona).any() else np.nan
                cut = logit(threshold)
                rows.append({"run": run, "rule": rule, "set": name, "files": len(g),
                             "eer": eer, "accepted": np.mean(z[bona] < cut),
                             "detected": np.mean(z[~bona] >= cut)})
    return pd.DataFrame(rows)


def summarize_short(table):
    """The short sets' table, for summary.md."""
    lines = ["", "Short recordings as they are (`--short`):", "",
             "| run | rule | set | files | EER | genuine accepted | spoofs detected |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {Path(r.run).name} | {r.rule} | {r.set} | {r.files} | {100 * r.eer:.1f}% | "
              f"{100 * r.accepted:.1f}% | {100 * r.detected:.1f}% |"
              for r in table.itertuples()]
    return "\n".join(lines) + "\n"


def join(paths, seconds, rng, sr=features.SAMPLE_RATE):
    """Utterances of ``paths`` in a random order (none twice), each followed by `GAP_S` of
    silence, until ``seconds`` are reached (at most all of them): shape (n,), float32."""
    parts, total = [], 0
    for i in rng.permutation(len(paths)):
        y = features.load_audio(paths[i])
        parts += [y, np.zeros(int(GAP_S * sr), np.float32)]
        total += len(y) + int(GAP_S * sr)
        if total >= seconds * sr:
            break
    return np.concatenate(parts)[:int(seconds * sr)].astype(np.float32)


def make_files(genuine, spoof, lengths, n_files, out, seed=SEED):
    """Write the long genuine and spliced recordings (module docstring) into ``out``; return a
    table: ``file``, ``kind`` (genuine / spliced), ``length_s``, ``stretch_start_s``."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for length in lengths:
        for k in range(n_files):
            y = join(genuine, length, rng)
            stretch = join(spoof, STRETCH_S, rng)
            at = int(rng.integers(0, max(1, len(y) - len(stretch))))
            spliced = np.concatenate([y[:at], stretch, y[at:len(y) - len(stretch)]])
            for kind, audio, start in (("genuine", y, None), ("spliced", spliced,
                                                               at / features.SAMPLE_RATE)):
                path = out / f"{kind}_{length}s_{k}.flac"
                with atomic_output(path, suffix=".flac") as tmp:
                    sf.write(str(tmp), audio, features.SAMPLE_RATE, format="FLAC")
                rows.append({"file": str(path), "kind": kind, "length_s": len(audio) /
                             features.SAMPLE_RATE, "stretch_start_s": start})
    return pd.DataFrame(rows)


def rule_logit(p, rule):
    """The recording's log-odds of spoof under ``rule`` from its windows' P(spoof) ``p`` (NaN:
    silent): `aggregate.combine` of their log-odds."""
    from scipy.special import logit

    return aggregate.combine(logit(np.clip(np.asarray(p, float), 1e-15, 1 - 1e-15)), rule)[0]


def decide(p, threshold, rule):
    """One verdict (True = spoof) from the windows' P(spoof) ``p`` (NaN: silent) by ``rule``."""
    from scipy.special import expit

    return bool(expit(rule_logit(p, rule)) >= threshold)


def score(files, run, reuse=None):
    """Every window's P(spoof) of every file by ``run``: a table ``run``, ``file``, ``window``,
    ``start_s``, ``p_spoof``, and the run's threshold. ``reuse``: an earlier table, whose rows
    of ``run`` are taken when they cover every file (else the files are scored)."""
    from deepfake_detector import inference

    detector = inference.Detector(run)
    if reuse is not None:
        mine = reuse[reuse["run"] == str(run)]
        if set(files["file"]) <= set(mine["file"]):
            print(f"{run}: windows reused from the earlier windows.csv", file=sys.stderr)
            return mine[mine["file"].isin(set(files["file"]))], detector.threshold
    rows = []
    for result in inference.score_files(list(files["file"]), detector, progress=True):
        if result["status"] != "ok":
            raise ValueError(f"{result['file']}: {result['error']}")
        rows += [{"run": str(run), "file": result["file"], "window": j,
                  "start_s": w["start_s"], "p_spoof": w["p_spoof"]}
                 for j, w in enumerate(result["windows"])]
    return pd.DataFrame(rows), detector.threshold


def evaluate(files, windows, thresholds, rules=RULES):
    """Per run, rule and length: genuine files flagged, spliced files detected, hours of
    genuine speech (the rows of results.csv)."""
    rows = []
    files = files[files["kind"] != "short"]
    for run, threshold in thresholds.items():
        mine = windows[windows["run"] == run]
        for rule in rules:
            verdict = {f: decide(g["p_spoof"].to_numpy(dtype=float), threshold, rule)
                       for f, g in mine.groupby("file")}
            for length, g in files.groupby(files["length_s"].round()):
                gen, spl = g[g["kind"] == "genuine"], g[g["kind"] == "spliced"]
                rows.append({"run": run, "rule": rule, "length_s": int(length),
                             "genuine_files": len(gen),
                             "flagged": int(sum(verdict[f] for f in gen["file"])),
                             "genuine_hours": gen["length_s"].sum() / 3600,
                             "spliced_files": len(spl),
                             "detected": int(sum(verdict[f] for f in spl["file"]))})
    return pd.DataFrame(rows)


def summarize(results):
    """summary.md: per run and rule, false alarms per hour of genuine speech and the share of
    spliced files detected, over all lengths, then per length."""
    lines = ["| run | rule | false alarms per hour of genuine speech | genuine files flagged | "
             "spliced stretches detected |", "|---|---|---|---|---|"]
    for (run, rule), g in results.groupby(["run", "rule"], sort=False):
        per_hour = g["flagged"].sum() / g["genuine_hours"].sum()
        lines.append(f"| {Path(run).name} | {rule} | {per_hour:.1f} | "
                     f"{g['flagged'].sum()}/{g['genuine_files'].sum()} | "
                     f"{g['detected'].sum()}/{g['spliced_files'].sum()} |")
    lines += ["", "Per length (genuine flagged / spliced detected):", ""]
    for (run, rule), g in results.groupby(["run", "rule"], sort=False):
        lines.append(f"- {Path(run).name}, {rule}: " + ", ".join(
            f"{r.length_s} s {r.flagged}/{r.genuine_files} / {r.detected}/{r.spliced_files}"
            for r in g.itertuples()))
    return "\n".join(lines) + "\n"


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--run", action="append", required=True,
                    help="a run folder to score with (repeat)")
    ap.add_argument("--genuine", required=True, metavar="PROTOCOL[:AUDIO_DIR]",
                    help="genuine utterances to join (the protocol's bonafide rows)")
    ap.add_argument("--spoof", required=True, metavar="PROTOCOL[:AUDIO_DIR]",
                    help="spoofed utterances to splice in (the protocol's spoof rows)")
    ap.add_argument("--lengths", type=number(float, 10, 3600), nargs="+",
                    default=list(LENGTHS), help="seconds of the long recordings")
    ap.add_argument("--files", type=number(int, 1, 100), default=FILES,
                    help="long genuine recordings per length (and as many spliced)")
    ap.add_argument("--seed", type=number(int, 0), default=SEED,
                    help="seed of the utterance draws and splice points")
    ap.add_argument("--out", required=True, help="folder for audio/, windows.csv, results.csv, "
                                                 "summary.md")
    ap.add_argument("--short", action="append", default=[], metavar="PROTOCOL[:AUDIO_DIR]",
                    help="also score these recordings as they are (all labels; repeat) and "
                         "report each rule's EER, genuine accepted and spoofs detected on "
                         "them (short.csv)")
    ap.add_argument("--reuse", action="store_true",
                    help="take a run's windows from <out>/windows.csv (an earlier call with the "
                         "same seed) when it holds every file, instead of scoring again")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        genuine, spoof = utterances(args.genuine, "bonafide"), utterances(args.spoof, "spoof")
        if not genuine or not spoof:
            raise ValueError(f"{len(genuine)} genuine and {len(spoof)} spoofed utterances: "
                             "need both")
        files = make_files(genuine, spoof, args.lengths, args.files, out / "audio", args.seed)
        files = pd.concat([files, short_files(args.short)], ignore_index=True)
        parts, thresholds = [], {}
        earlier = None
        if args.reuse:
            if not (out / "windows.csv").is_file():
                raise ValueError(f"--reuse: no {out / 'windows.csv'} to reuse")
            earlier = pd.read_csv(out / "windows.csv")
        for run in args.run:
            table, thresholds[str(run)] = score(files, run, earlier)
            parts.append(table)
    except (ValueError, FileNotFoundError, protocols.ProtocolError, features.AudioError) as e:
        raise SystemExit(f"error: {e}") from None
    windows = pd.concat(parts, ignore_index=True)
    results = evaluate(files, windows, thresholds)
    write_text_atomic(out / "windows.csv", windows.to_csv(index=False))
    write_text_atomic(out / "results.csv", results.to_csv(index=False))
    text = summarize(results)
    if args.short:
        short = evaluate_short(files, windows, thresholds)
        write_text_atomic(out / "short.csv", short.to_csv(index=False))
        text += summarize_short(short)
    write_text_atomic(out / "summary.md", text)
    print(text, end="")
    return results


if __name__ == "__main__":
    main()
