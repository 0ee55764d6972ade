"""Score real recordings with a trained run: any common format, rate, channel count and length.

Each file is decoded to 16 kHz mono (the run's saved feature parameters decide everything) and
scored in sliding windows of the training window (about 4 s) with a hop of ``--hop`` seconds; the
last window is aligned with the end of the file, so nothing is left out. A file shorter than one
window is scored once, repeat-padded exactly as in training. Per file the output gives the
spoof probability of every window, their mean and maximum, and the P(spoof) of the window rule
``--aggregate`` that decides the label at the decision threshold (it says which threshold that
was). The rule is the run's own (in its model's metadata), else ``run:4``: spoof when 4
consecutive windows (about 10 s) are at or above the threshold, all of them in a shorter
recording. Measured on long recordings, it raises far fewer false alarms per hour of genuine
speech than the most spoof-like window (``max``) and still finds most 10-s spoofed stretches;
a shorter one is missed by design (docs/recipes.md, "Long recordings"). The scoring itself
lives in inference.py (shared with serve.py).

Scores follow ASVspoof: ``score`` = log-odds of bonafide (higher = more bonafide).

Examples::

    python predict.py --run runs/baseline call.mp3 interviews/          # a table
    python predict.py --run runs/baseline --json clip.wav > clip.json
    python predict.py --run runs/baseline --csv data/wavefake/*.wav

A file that cannot be decoded, is empty, too short or silent gets an error line; the others are
still scored, and the exit status is 1 when any file failed (0 otherwise).
"""

import argparse
import json
import sys
from pathlib import Path

from deepfake_detector import aggregate, display, inference, runs
from deepfake_detector.cli import HelpFormatter, number

MAX_SECONDS = 3600.0  # longest recording scored (an hour)
CSV_COLUMNS = ["file", "status", "error", "label", "p_spoof", "aggregate", "p_spoof_mean",
               "p_spoof_max", "score", "threshold", "threshold_source", "duration_s",
               "sample_rate", "channels", "windows_scored", "windows_silent", "unfamiliarity"]


NAME_WIDTH = 40  # the file column of the table


def short_names(files, width=NAME_WIDTH):
    """The file column: each path relative to the folder all files share (named in the table's
    heading), escaped (`display.display_name`), and cut in the middle when longer than ``width``
    so that its start and its extension both stay readable.

    Returns
    -------
    names : list of str
    common : str or None
        The shared folder, when the names are relative to one.
    """
    import os

    paths = [str(f) for f in files]
    try:
        common = os.path.commonpath([os.path.dirname(p) or "." for p in paths])
    except ValueError:  # absolute and relative mixed
        common = ""
    names = [os.path.relpath(p, common) if common else p for p in paths]
    names = [display.display_name(n) for n in names]
    cut = [n if len(n) <= width else n[:width // 2 - 2] + "..." + n[-(width - width // 2 - 1):]
           for n in names]
    return cut, (display.display_name(common) if common not in ("", ".") else None)


def format_table(rows):
    """A readable table of results: P(spoof) with the digits that show the decision against the
    threshold (`display.format_probability`), the margin to it, and ``uncertain`` beside a label
    within `display.UNCERTAIN_MARGIN` of it; a legend of the columns below it."""
    names, common = short_names([r["file"] for r in rows])
    lines = ([f"files in {common}/"] if common else []) + [
        f"{'file':{NAME_WIDTH}s} {'label':>9s} {'P(spoof)':>10s} {'margin':>10s} {'mean':>8s} "
        f"{'max':>8s} {'score':>8s} {'dur (s)':>8s} {'windows':>7s}"]
    for name, r in zip(names, rows):
        if r["status"] != "ok":
            lines.append(f"{name:{NAME_WIDTH}s} {'ERROR':>9s}  {r['error']}")
            continue
        d = r["display"]
        label = r["label"] + ("!" if d.get("uncertain_reason") == "unfamiliar" else
                              "?" if d["verdict"] == "uncertain" else "")
        lines.append(f"{name:{NAME_WIDTH}s} {label:>9s} {d['p_spoof']:>10s} {d['margin']:>10s} "
                     f"{d['p_spoof_mean']:>8s} {d['p_spoof_max']:>8s} {r['score']:8.3f} "
                     f"{r['duration_s']:8.2f} {r['windows_scored']:7d}")
    ok = [r for r in rows if r["status"] == "ok"]
    near = [r for r in ok if r["display"].get("uncertain_reason") == "near_threshold"]
    if near:
        lines.append(f"? uncertain: P(spoof) within {near[0]['display']['uncertain_margin']} of "
                     "the threshold (the run's band; the label is the side it leans to)")
    if any(r["display"].get("uncertain_reason") == "unfamiliar" for r in ok):
        lines.append("! UNCERTAIN: unlike the recordings this detector was trained on "
                     "(unfamiliarity above 1: " + ", ".join(
                         f"{display.display_name(Path(r['file']).name)} "
                         f"{r['display']['unfamiliarity']}" for r in ok
                         if r["display"].get("uncertain_reason") == "unfamiliar")[:300]
                     + "); its P(spoof) means little (the label is the side it leans to)")
    lines += ["P(spoof): the window rule's, which decides the label (3 decimals, more where "
              "fewer would hide its side of the threshold)",
              "margin: P(spoof) - threshold (> 0: spoof side); mean, max: over the windows; "
              "score: ASVspoof score, higher = more bonafide"]
    return "\n".join(lines)


def window_rule(text):
    """``--aggregate``'s type: `aggregate.check`, its error as argparse's."""
    try:
        return aggregate.check(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser():
    """The command line of predict.py."""
    ap = argparse.ArgumentParser(
        description="Score audio files with a trained run (label, P(spoof), ASVspoof score; "
                    "sliding windows for long recordings).",
        formatter_class=HelpFormatter)
    ap.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    inference.add_model_args(ap)
    ap.add_argument("--aggregate", type=window_rule, metavar="{max,mean,run:K}",
                    help="window rule that decides the file's label: the most spoof-like "
                         "window, the mean P(spoof), or K consecutive windows at or above the "
                         "threshold (all of them when fewer; docs/recipes.md, 'Long "
                         f"recordings'); default: the run's own, else {inference.AGGREGATE}")
    ap.add_argument("--hop", type=number(float, 0.1, 3600), default=inference.HOP_SECONDS,
                    help="seconds between window starts in long recordings")
    ap.add_argument("--batch-size", type=number(int, 1, 4096),
                    help="windows per model call, across files (default: the model family's: "
                         "32, 8 for aasist)")
    ap.add_argument("--max-seconds", type=number(float, 0, 86400, above=True), default=MAX_SECONDS,
                    help="longest recording scored; longer files get an error line (checked "
                         "from the header before decoding)")
    out = ap.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON (a list, one object per file, "
                                                         "with per-window scores)")
    out.add_argument("--csv", action="store_true", help="CSV, one row per file")
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.threshold is not None and not 0 < args.threshold < 1:
        ap.error("--threshold must be in (0, 1)")
    try:
        run = Path(args.run) if args.run else runs.find_latest_run()
        detector = inference.Detector(run, args.model, args.threshold)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    for stream in (sys.stdout, sys.stderr):  # a name that is not UTF-8 never kills the output
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    paths = inference.expand_inputs(args.inputs)
    if not paths:
        raise SystemExit(f"error: no audio files in {', '.join(map(str, args.inputs))} "
                         f"(extensions: {', '.join(sorted(inference.AUDIO_EXTENSIONS))})")
    rows = list(inference.score_files(paths, detector, args.hop, args.batch_size,
                                      args.aggregate, args.max_seconds, progress=True))
    if args.json:
        print(json.dumps({"model": detector.identity(), "results": rows}, indent=2))
    elif args.csv:
        import pandas as pd

        table = pd.DataFrame(rows).reindex(columns=CSV_COLUMNS)
        table["file"] = table["file"].map(display.display_name)  # as in the table: escaped
        print(table.to_csv(index=False), end="")
    else:
        print(f"model: {detector.model_path} | threshold "
              f"{display.format_threshold(detector.threshold)} ({detector.threshold_source}) | "
              f"label by {aggregate.describe(args.aggregate or detector.aggregate)}\n"
              f"{detector.trained_on}")
        print(format_table(rows))
    if detector.warning:
        print(f"warning: this model was {detector.warning}", file=sys.stderr)
    failed = sum(r["status"] != "ok" for r in rows)
    if failed:
        print(f"{failed} of {len(rows)} files failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
