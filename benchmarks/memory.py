"""Scoring memory by part, for recordings of 1, 10 and 60 minutes, and by batch size.

    python benchmarks/memory.py --run runs/aasist_l --json benchmarks/memory.json

Makes speech-like 16 kHz recordings (harmonics with a syllable envelope, written minute by
minute), then, each in a fresh process:

- **by part** (``--minutes``): the resident memory after importing TensorFlow (the runtime),
  after loading the run (the model), the peak while decoding the recording and what the decoded
  audio keeps, and the peak while scoring it as predict.py does (`inference.score_files`: the
  batch's feature maps, the traced graph, the allocator's pools);
- **predict.py itself** (``--run RUN FILE``): its peak resident memory, read exactly from the
  kernel when it exits (``os.wait4``), and its time;
- **by batch size** (``--batch-sizes``, on the longest recording of at most 10 minutes):
  predict.py's peak and time with ``--batch-size`` each.

Prints Markdown tables and writes ``--json``. Peak memory is exact; times vary by 20-30% on a
shared 2-core VM: compare them within one run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import startup  # noqa: E402 - benchmarks/startup.py: publish
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402

# -----------------------------------------------------------------------------
SR = 16000
MINUTES = (1, 10, 60)
BATCH_SIZES = (1, 2, 4, 8)
# -----------------------------------------------------------------------------


def make_recording(path, minutes, seed=0):
    """A speech-like mono 16 kHz PCM WAV of ``minutes`` minutes, written one minute at a time
    (so making an hour never holds it in memory). Returns ``path``."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(60 * SR) / SR
    with sf.SoundFile(path, "w", SR, 1, "PCM_16") as f:
        for _ in range(int(minutes)):
            f0 = rng.uniform(90, 250) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
            phase = 2 * np.pi * np.cumsum(f0) / SR
            y = sum(np.sin(k * phase) / k for k in range(1, 12))
            y *= np.abs(np.sin(2 * np.pi * rng.uniform(2, 5) * t)) ** 0.5
            f.write((0.3 * y / np.abs(y).max()).astype(np.float32))
    return path


def status_mb(field):
    """A memory field of this process from /proc/self/status (``VmRSS``, ``VmHWM``), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def parts(run, path, batch_size=None):
    """In this process: resident memory (MB) after each step of scoring ``path`` with ``run``,
    and the peak (high-water mark) of each step. Returns a dict."""
    out = {"start_rss": status_mb("VmRSS")}
    import tensorflow  # noqa: F401

    from deepfake_detector import features, inference

    out["runtime_rss"] = status_mb("VmRSS")
    detector = inference.Detector(run)
    out["model_rss"] = status_mb("VmRSS")
    y = features.load_audio(path, detector.features["sample_rate"])
    out["audio_rss"], out["audio_hwm"] = status_mb("VmRSS"), status_mb("VmHWM")
    out["audio_mb"] = y.nbytes / 2**20
    del y
    start = time.perf_counter()
    result = next(inference.score_files([path], detector, batch_size=batch_size))
    out["score_seconds"] = time.perf_counter() - start
    out["score_hwm"] = status_mb("VmHWM")
    out["windows"] = result.get("windows_scored")
    return out


def in_fresh_process(argv):
    """Run ``argv`` to its end; (its peak resident memory in MB, seconds, stdout). The peak is
    the kernel's count for that child (``os.wait4``), not a sample."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=err,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n"
                               f"{err.read().decode()[-2000:]}")
        return usage.ru_maxrss / 1024, seconds, out.read().decode()  # ru_maxrss: kB on Linux


def by_part(p):
    """The parts (MB) of one `parts` measurement: runtime, model, audio peak and kept, scoring
    beyond them, and the process's peak."""
    return {"runtime": p["runtime_rss"], "model": p["model_rss"] - p["runtime_rss"],
            "decoding (peak above the model)": p["audio_hwm"] - p["model_rss"],
            "decoded audio (kept)": p["audio_mb"],
            "scoring (peak above model + audio)": p["score_hwm"] - p["model_rss"] - p["audio_mb"],
            "peak": max(p["score_hwm"], p["audio_hwm"])}


def table(rows, columns):
    """Markdown table of ``rows`` (name -> dict) with ``columns`` (keys, printed as is)."""
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row[c]:,.0f}" if isinstance(row[c], (int, float)) and abs(row[c]) >= 10
                 else f"{row[c]:.2f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(run, work, minutes=MINUTES, batch_sizes=BATCH_SIZES):
    """Every measurement of the module docstring; a JSON-able dict."""
    py, here = sys.executable, str(Path(__file__).resolve())
    files = {m: make_recording(Path(work) / f"speech_{m}min.wav", m) for m in minutes}
    out = {"parts": {}, "predict": {}, "batch": {}}
    for m, path in files.items():
        _, _, text = in_fresh_process([py, here, "--parts", str(run), str(path)])
        out["parts"][m] = json.loads(text.strip().splitlines()[-1])
        peak, seconds, _ = in_fresh_process([py, "predict.py", "--run", str(run), str(path),
                                             "--json"])
        out["predict"][m] = {"peak_mb": peak, "seconds": seconds}
        print(f"  {m} min: predict.py peak {peak:,.0f} MB, {seconds:.1f} s", flush=True)
    longest = max((m for m in minutes if m <= 10), default=min(minutes))
    for k in batch_sizes:
        peak, seconds, _ = in_fresh_process([py, "predict.py", "--run", str(run),
                                             str(files[longest]), "--json", "--batch-size",
                                             str(k)])
        out["batch"][k] = {"peak_mb": peak, "seconds": seconds, "minutes": longest}
        print(f"  batch {k}: predict.py peak {peak:,.0f} MB, {seconds:.1f} s", flush=True)
    return out


def report(out):
    """The Markdown tables of a `measure` result."""
    rows = {f"{m} min": {**by_part(p), "predict.py peak": out["predict"][m]["peak_mb"]}
            for m, p in out["parts"].items()}
    cols = list(next(iter(rows.values())))
    text = [table(rows, cols)]
    if out["batch"]:
        text.append(table({f"batch {k}": {"predict.py peak MB": b["peak_mb"],
                                          "seconds": b["seconds"]}
                           for k, b in out["batch"].items()}, ["predict.py peak MB", "seconds"]))
    return "\n\n".join(text)


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--run", help="the run folder predict.py scores with")
    ap.add_argument("--minutes", type=number(int, 1, 600), nargs="+", default=list(MINUTES),
                    help="lengths of the recordings made and scored")
    ap.add_argument("--batch-sizes", type=number(int, 1, 4096), nargs="*",
                    default=list(BATCH_SIZES),
                    help="predict.py --batch-size values tried on the longest recording of "
                         "at most 10 minutes (none: skip)")
    ap.add_argument("--workdir", help="where the recordings are made (default: a temporary "
                                      "folder, removed)")
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--parts", nargs=2, metavar=("RUN", "FILE"),
                    help="internal: measure the parts in this process and print them as JSON")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.parts:
        print(json.dumps(parts(*args.parts)))
        return None
    if not args.run or not Path(args.run).exists():
        raise SystemExit(f"error: --run {args.run} is not a run folder")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        out = measure(Path(args.run).resolve(), work, args.minutes, args.batch_sizes)
    return startup.publish(report(out), out, args.json)


if __name__ == "__main__":
    main()
