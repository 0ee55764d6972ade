"""Score real recordings with a trained run: any common format, rate, channel count and length.

Each file is decoded to 16 kHz mono (the run's saved feature parameters decide everything) and
scored in sliding windows of the training window (about 4 s) with a hop of ``--hop`` seconds; the
last window is aligned with the end of the file, so nothing is left out. A file shorter than one
window is scored once, repeat-padded exactly as in training. Per file the output gives the
spoof probability of every window and two aggregates, the mean and the **maximum** (one
synthetic sentence in a long call is not averaged away); the label uses ``--aggregate``
(default max) at the decision threshold, and says which threshold that was.

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
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's INFO/WARNING chatter

import numpy as np

import data_loader
import preprocess

# -----------------------------------------------------------------------------
HOP_SECONDS = 2.0  # window hop for long recordings (the window is the training window, ~4 s)
BATCH_SIZE = 64  # windows per model call, across files
AGGREGATE = "max"  # file label from the max (or mean) window spoof probability
MIN_SECONDS = 0.1  # shorter recordings are refused
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma",
                    ".aiff", ".aif", ".webm"}
# -----------------------------------------------------------------------------


class Detector:
    """A run's model with its feature parameters and decision threshold.

    Parameters
    ----------
    run_dir : str or Path
    which : {"best", "final"}
    threshold : float, optional
        Decision threshold on P(spoof); default the threshold train.py calibrated on the
        run's validation data for this model (``threshold.json``), else 0.5. It was
        calibrated on one window per utterance: with several windows and ``--aggregate max``,
        a long file is flagged more readily than one window would be.
    """

    def __init__(self, run_dir, which="best", threshold=None):
        import evaluate

        self.run_dir = Path(run_dir)
        self.model, self.meta, self.model_path = evaluate.load_run(self.run_dir, which)
        self.features = self.meta["features"]
        self._hidden, self._kernel, self._bias = evaluate.logit_parts(self.model)
        saved = evaluate.read_threshold(self.run_dir, which)
        if threshold is not None:
            self.threshold, self.threshold_source = float(threshold), "--threshold"
        elif saved is not None:
            self.threshold = float(saved["threshold"])
            self.threshold_source = f"calibrated ({saved['method']}, threshold.json)"
        else:
            self.threshold, self.threshold_source = 0.5, "default 0.5 (no threshold saved)"

    @property
    def window_samples(self):
        p = self.features
        return p["clip_samples"] if p["fit"] == "window" else None

    def logits(self, mels):
        """Log-odds of spoof for a batch of mel arrays, shape (n, 128, 128) -> (n,)."""
        x = data_loader.to_model_input(np.asarray(mels, np.float32))
        h = np.asarray(self._hidden.predict_on_batch(x), np.float64)
        return (h @ self._kernel + self._bias).reshape(-1)

    def identity(self):
        """What /health and the JSON output say about the model."""
        return {"run": str(self.run_dir), "model": self.model_path.name,
                "threshold": self.threshold, "threshold_source": self.threshold_source,
                "features": self.features}


def window_starts(n_samples, window, hop):
    """Start samples of the windows covering ``n_samples``: every ``hop`` from 0, plus one
    aligned with the end when the hop grid leaves a tail. One window (start 0) when the signal
    is not longer than a window.

    Returns
    -------
    starts : list of int
    """
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def open_windows(path, detector, hop_seconds=HOP_SECONDS, max_seconds=None):
    """Decode one file and plan its feature windows.

    Returns
    -------
    info : dict
        duration, sample rate and channels of the file, the window and hop in seconds.
    spans : list of (start_s, end_s)
    mels : iterator of np.ndarray (128, 128) or None
        The windows' features, computed lazily (None for a silent window, not scored), so
        memory holds the decoded audio and one window, however long the file.

    Raises
    ------
    preprocess.AudioError
        Undecodable, empty, too short or too long (``max_seconds``).
    """
    import soundfile as sf

    p = detector.features
    sr = p["sample_rate"]
    try:
        meta = sf.info(str(path))
        file_sr, channels = meta.samplerate, meta.channels
    except Exception:  # noqa: BLE001 - formats libsndfile cannot open: decoded below or refused
        file_sr, channels = None, None
    y = preprocess.load_audio(path, sr)
    duration = y.size / sr
    if duration < MIN_SECONDS:
        raise preprocess.AudioError(f"too short: {duration:.3f} s (at least {MIN_SECONDS} s)")
    if max_seconds is not None and duration > max_seconds:
        raise preprocess.AudioError(f"too long: {duration:.0f} s (at most {max_seconds:.0f} s)")
    win = detector.window_samples
    if win is None:  # a "resize" model sees the whole utterance at once
        spans = [(0, y.size)]
    else:
        hop = max(1, int(round(hop_seconds * sr)))
        spans = [(a, min(a + win, y.size)) for a in window_starts(y.size, win, hop)]

    def mels():
        for a, b in spans:
            try:
                yield preprocess.compute_features(y[a:b], p)
            except preprocess.AudioError:
                yield None

    info = {"duration_s": round(duration, 3), "sample_rate": file_sr, "channels": channels,
            "window_s": round((win or y.size) / sr, 4), "hop_s": hop_seconds if win else None}
    return info, [(a / sr, b / sr) for a, b in spans], mels()


def summarize(info, spans, logits, detector, aggregate=AGGREGATE):
    """Per-file result from its window logits (log-odds of spoof; NaN for silent windows)."""
    from scipy.special import expit, logit

    scored = ~np.isnan(logits)
    p = expit(logits[scored])
    if aggregate == "max":
        agg = float(np.max(logits[scored]))
    else:
        agg = float(logit(np.clip(np.mean(p), 1e-15, 1 - 1e-15)))
    p_agg = float(expit(agg))
    return {
        "status": "ok", **info,
        "windows_scored": int(scored.sum()), "windows_silent": int((~scored).sum()),
        "p_spoof_mean": float(np.mean(p)), "p_spoof_max": float(np.max(p)),
        "aggregate": aggregate, "p_spoof": p_agg, "score": -agg,
        "label": "spoof" if p_agg >= detector.threshold else "bonafide",
        "threshold": detector.threshold, "threshold_source": detector.threshold_source,
        "windows": [{"start_s": round(a, 3), "end_s": round(b, 3),
                     "p_spoof": None if np.isnan(z) else float(expit(z)),
                     "score": None if np.isnan(z) else float(-z)}
                    for (a, b), z in zip(spans, logits)],
    }


def score_files(paths, detector, hop_seconds=HOP_SECONDS, batch_size=BATCH_SIZE,
                aggregate=AGGREGATE, max_seconds=None):
    """Score files, batching windows across files. Yields one result per file, in order.

    Each result has ``file`` and ``status`` ("ok" or "error"); errors carry ``error`` (the
    reason), scored files the fields of `summarize`.
    """
    batch, done = [], []  # batch: (slot, window index, mel); done: slots in input order

    def flush():
        if batch:
            for (slot, j, _), z in zip(batch, detector.logits([m for _, _, m in batch])):
                slot["logits"][j] = z
            batch.clear()

    def finished(slot):
        if "error" in slot:
            return {"file": slot["file"], "status": "error", "error": slot["error"]}
        return {"file": slot["file"], **summarize(slot["info"], slot["spans"], slot["logits"],
                                                  detector, aggregate)}

    for path in paths:
        slot = {"file": str(path)}
        try:
            info, spans, mels = open_windows(path, detector, hop_seconds, max_seconds)
            slot.update(info=info, spans=spans, logits=np.full(len(spans), np.nan))
            silent = True
            for j, mel in enumerate(mels):
                if mel is not None:
                    silent = False
                    batch.append((slot, j, mel))
                    if len(batch) >= batch_size:
                        flush()
            if silent:
                slot["error"] = "silent: every window is at or below -80 dBFS"
        except (preprocess.AudioError, OSError, ValueError) as e:
            slot["error"] = str(e)
        done.append(slot)
        if not batch:  # every window so far is scored
            yield from (finished(s) for s in done)
            done.clear()
    flush()
    yield from (finished(s) for s in done)


def expand_inputs(items):
    """Files as given, and the audio files inside folders (recursively, sorted)."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS
                          and f.is_file())
        else:
            out.append(p)
    return out


def format_table(rows):
    """A readable table of results."""
    lines = [f"{'file':40s} {'label':>8s} {'P(spoof)':>8s} {'mean':>6s} {'max':>6s} "
             f"{'score':>8s} {'dur (s)':>8s} {'windows':>7s}"]
    for r in rows:
        name = r["file"] if len(r["file"]) <= 40 else "..." + r["file"][-37:]
        if r["status"] != "ok":
            lines.append(f"{name:40s} {'ERROR':>8s}  {r['error']}")
            continue
        lines.append(f"{name:40s} {r['label']:>8s} {r['p_spoof']:8.3f} {r['p_spoof_mean']:6.3f} "
                     f"{r['p_spoof_max']:6.3f} {r['score']:8.3f} {r['duration_s']:8.2f} "
                     f"{r['windows_scored']:7d}")
    return "\n".join(lines)


CSV_COLUMNS = ["file", "status", "error", "label", "p_spoof", "aggregate", "p_spoof_mean",
               "p_spoof_max", "score", "threshold", "threshold_source", "duration_s",
               "sample_rate", "channels", "windows_scored", "windows_silent"]


def add_model_args(ap):
    """The --run, --model and --threshold flags shared by predict.py and serve.py."""
    ap.add_argument("--run", help="run folder from train.py (default: the newest under runs/)")
    ap.add_argument("--model", choices=("best", "final"), default="best",
                    help="best.keras (best validation --monitor of train.py, by default the "
                         "lowest loss) or model.keras (last epoch)")
    ap.add_argument("--threshold", type=float,
                    help="decision threshold on P(spoof) (default: the threshold train.py "
                         "calibrated on the run's validation data for this model, "
                         "threshold.json; else 0.5)")


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Score audio files with a trained run (label, P(spoof), ASVspoof score; "
                    "sliding windows for long recordings).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    add_model_args(ap)
    ap.add_argument("--aggregate", choices=("max", "mean"), default=AGGREGATE,
                    help="window aggregate that decides the file's label")
    ap.add_argument("--hop", type=float, default=HOP_SECONDS,
                    help="seconds between window starts in long recordings")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                    help="windows per model call (across files)")
    out = ap.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON (a list, one object per file, "
                                                         "with per-window scores)")
    out.add_argument("--csv", action="store_true", help="CSV, one row per file")
    args = ap.parse_args(argv)
    if args.threshold is not None and not 0 < args.threshold < 1:
        ap.error("--threshold must be in (0, 1)")
    if args.hop <= 0:
        ap.error("--hop must be positive")
    import evaluate

    try:
        run = Path(args.run) if args.run else evaluate.find_latest_run()
        detector = Detector(run, args.model, args.threshold)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    rows = list(score_files(expand_inputs(args.inputs), detector, args.hop, args.batch_size,
                            args.aggregate))
    if args.json:
        print(json.dumps({"model": detector.identity(), "results": rows}, indent=2))
    elif args.csv:
        import pandas as pd

        print(pd.DataFrame(rows).reindex(columns=CSV_COLUMNS).to_csv(index=False), end="")
    else:
        print(f"model: {detector.model_path} | threshold {detector.threshold:g} "
              f"({detector.threshold_source}) | label by {args.aggregate} window P(spoof)")
        print(format_table(rows))
    failed = sum(r["status"] != "ok" for r in rows)
    if failed:
        print(f"{failed} of {len(rows)} files failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
