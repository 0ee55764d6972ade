"""Speed and memory of the pipeline at ASVspoof-like scale, on this machine.

Not part of the test suite. Generates N synthetic utterances of realistic length (log-normal,
median 3 s like ASVspoof 2019 LA, 1-10 s, 16 kHz FLAC) and measures, with the machine stated:

- preprocessing files/s with 1 worker and with all cores, and the decode-plus-mel floor on the
  same files (decoding and the log-mel computation alone on one core, nothing written: the work
  no implementation can skip),
- training time of the default recipe (10 epochs, batch 16) with and without the backbone
  feature cache,
- evaluation files/s: batched streaming prediction vs ``model.predict`` once per file,
- peak RSS (main process, and the whole process tree) of preprocessing and evaluation at two
  corpus sizes.

Example::

    python benchmarks/run.py                      # 2,000 and 10,000 files (about 15 minutes)
    python benchmarks/run.py --files 500 2000 --train-files 500

Timings on shared machines are noisy: compare the ratios printed in one run.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SR = 16000
MEDIAN_SECONDS = 3.0


def make_corpus(root, n, seed=0):
    """N FLAC files in the ASVspoof 2019 layout with a protocol; durations log-normal around
    3 s (1-10 s). Returns the protocol path and the audio folder."""
    import soundfile as sf

    audio = Path(root) / "flac"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        dur = float(np.clip(rng.lognormal(np.log(MEDIAN_SECONDS), 0.4), 1.0, 10.0))
        t = np.arange(int(dur * SR)) / SR
        f0 = rng.uniform(90, 250) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        y = sum(np.sin(k * phase) / k for k in range(1, 12))
        y *= np.abs(np.sin(2 * np.pi * rng.uniform(2, 5) * t)) ** 0.5  # syllable-like envelope
        y += 0.02 * rng.standard_normal(t.size)
        utt = f"BENCH_{i:07d}"
        sf.write(audio / f"{utt}.flac", (0.3 * y / np.abs(y).max()).astype(np.float32), SR,
                 subtype="PCM_16")
        label = "bonafide" if i % 2 == 0 else "spoof"
        lines.append(f"BSPK{i % 20:02d} {utt} - {'-' if label == 'bonafide' else 'A01'} {label}")
    protocol = Path(root) / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol, audio


def _tree_rss(root_pid):
    """RSS in MB of ``root_pid`` and of it plus all its descendants (from /proc)."""
    parents, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            parents[int(d)] = int(fields["PPid"])
            rss[int(d)] = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
        except (OSError, KeyError, ValueError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        tree.update(kids)
        frontier += kids
    return rss.get(root_pid, 0.0), sum(rss.get(p, 0.0) for p in tree)


def run_stage(code, label):
    """Run Python ``code`` in a fresh process; return wall seconds and peak RSS (MB) of the
    main process and of its whole process tree, sampled every 50 ms."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0, 0.0]

    def sample():
        while proc.poll() is None:
            main, tree = _tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], main), max(peak[1], tree)
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    t.join()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{label} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return {"stage": label, "seconds": wall, "rss_main_mb": peak[0], "rss_tree_mb": peak[1],
            **result}


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(mem, 1), "python": platform.python_version()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--files", type=int, nargs=2, default=[2000, 10000], metavar=("SMALL", "LARGE"),
                    help="the two corpus sizes (preprocessing and evaluation, RSS comparison)")
    ap.add_argument("--train-files", type=int, default=2000,
                    help="utterances for the training comparison (80/20 split)")
    ap.add_argument("--per-file", type=int, default=200,
                    help="files scored one model.predict call at a time")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--json", default="benchmarks/results.json", help="write results here")
    args = ap.parse_args(argv)
    small, large = args.files
    work = Path(args.workdir or tempfile.mkdtemp(prefix="deepfake-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "command": " ".join(["python", "benchmarks/run.py"]
                                                         + (argv or sys.argv[1:])), "stages": []}
    cores = os.cpu_count()
    try:
        print(f"generating {large} utterances in {work} ...", flush=True)
        protocol, audio = make_corpus(work / "corpus", large)
        lines = protocol.read_text().splitlines()
        proto_small = work / "protocol_small.txt"
        proto_small.write_text("\n".join(lines[:small]) + "\n")
        proto_train = work / "protocol_train.txt"
        proto_train.write_text("\n".join(lines[:args.train_files]) + "\n")
        stages = results["stages"]

        def stage(code, label, **extra):
            r = run_stage(code, label)
            r.update(extra)
            stages.append(r)
            print(f"  {label}: {r['seconds']:.1f} s, RSS main {r['rss_main_mb']:.0f} MB, "
                  f"tree {r['rss_tree_mb']:.0f} MB", flush=True)
            return r

        floor = stage(f"""
import json, time, preprocess
from threadpoolctl import threadpool_limits
ids = [l.split()[1] for l in open({str(proto_small)!r})]
t = time.perf_counter()
with threadpool_limits(1):  # one core, like one preprocessing worker
    for u in ids:
        preprocess.compute_features(preprocess.load_audio({str(audio)!r} + '/' + u + '.flac'))
print(json.dumps({{"work_seconds": time.perf_counter() - t}}))
""", f"decode+mel floor, {small} files", files=small)

        def prep(proto, n, workers, name):
            return stage(f"""
import json, time, preprocess
t = time.perf_counter()
preprocess.preprocess({str(proto)!r}, {str(audio)!r}, {str(work / name)!r}, workers={workers},
                      progress=False)
print(json.dumps({{"work_seconds": time.perf_counter() - t}}))
""", f"preprocess {n} files, {workers} worker(s)", files=n, workers=workers)

        p1 = prep(proto_small, small, 1, "feat_small_w1")
        pn = prep(proto_small, small, cores, "feat_small_wn")
        pl1 = prep(protocol, large, 1, "feat_large_w1")
        pl = prep(protocol, large, cores, "feat_large_wn")
        # the machine's own ceiling: independent single-worker processes on disjoint parts
        parts = []
        for k in range(cores):
            part = work / f"protocol_part{k}.txt"
            part.write_text("\n".join(lines[k::cores]) + "\n")
            parts.append(part)
        pair = stage(f"""
import json, subprocess, sys, time
t = time.perf_counter()
procs = [subprocess.Popen([sys.executable, "-c", "import preprocess; preprocess.preprocess("
                           + repr(p) + ", " + repr({str(audio)!r}) + ", " + repr(p + ".out")
                           + ", workers=1, progress=False)"]) for p in {[str(p) for p in parts]!r}]
assert all(p.wait() == 0 for p in procs)
print(json.dumps({{"work_seconds": time.perf_counter() - t}}))
""", f"{cores} independent 1-worker processes, {large} files in total", files=large)
        prep(proto_train, args.train_files, cores, "feat_train")

        def fit(cache):
            run = work / f"run_{'cache' if cache else 'plain'}"
            return stage(f"""
import json, time, train
t = time.perf_counter()
train.train({str(work / 'feat_train')!r}, {str(run)!r}, weights="none", verbose=0,
            feature_cache={cache}, cache_dir={str(work / 'cache')!r})
print(json.dumps({{"work_seconds": time.perf_counter() - t}}))
""", f"train 10 epochs, batch 16, {args.train_files} files, cache={cache}",
                files=args.train_files)

        t_cache, t_plain = fit(True), fit(False)
        run = work / "run_cache"

        def evaluate_stage(n, name):
            return stage(f"""
import json, time, evaluate
t = time.perf_counter()
evaluate.evaluate({str(run)!r}, data={str(work / name)!r}, out={str(work / ('eval_' + name))!r},
                  plots=False)
print(json.dumps({{"work_seconds": time.perf_counter() - t}}))
""", f"evaluate {n} files (batched)", files=n)

        e_small = evaluate_stage(small, "feat_small_wn")
        e_large = evaluate_stage(large, "feat_large_wn")
        # Batched and per-file prediction each run in a fresh process, so that neither
        # inherits the other's allocator and thread-pool state (measured: batched prediction
        # read 98 files/s right after 200 batch-1 calls in one process, 149 files/s alone).
        batched = stage(f"""
import json, time, numpy as np, data_loader, evaluate
model, meta, _ = evaluate.load_run({str(run)!r})
df = data_loader.load_manifest({str(work / 'feat_small_wn')!r})
ds = data_loader.make_dataset(df, evaluate.BATCH_SIZE, with_labels=False)
hidden, kernel, bias = evaluate.logit_parts(model)  # what evaluate.predict_logits runs
hidden.predict(ds.take(1), verbose=0)  # warm-up (graph tracing), not timed, as per file
t = time.perf_counter()
h = hidden.predict(ds, verbose=0)
logits = h.astype(np.float64) @ kernel + bias
print(json.dumps({{"work_seconds": time.perf_counter() - t}}))
""", f"prediction only, batched ({small} files)", files=small)
        per_file = stage(f"""
import json, time, numpy as np, data_loader, evaluate
model, meta, _ = evaluate.load_run({str(run)!r})
df = data_loader.load_manifest({str(work / 'feat_small_wn')!r}).iloc[:{args.per_file}]
x = data_loader.to_model_input(np.load(df["path"].iloc[0]))[None]
model.predict(x, verbose=0)  # warm-up, not timed
t = time.perf_counter()
for p in df["path"]:
    model.predict(data_loader.to_model_input(np.load(p))[None], verbose=0)
print(json.dumps({{"work_seconds": time.perf_counter() - t}}))
""", f"prediction only, model.predict once per file ({args.per_file} files)",
                         files=args.per_file)

        fps = lambda r: r["files"] / r["work_seconds"]
        summary = {
            "floor_fps": fps(floor), "preprocess_1_fps": fps(p1), "preprocess_all_fps": fps(pn),
            "preprocess_speedup_all_vs_1_small": fps(pn) / fps(p1),
            "preprocess_speedup_all_vs_1_large": fps(pl) / fps(pl1),
            "independent_processes_speedup_large": fps(pair) / fps(pl1),
            "preprocess_1_share_of_floor": fps(p1) / fps(floor),
            "train_plain_s": t_plain["work_seconds"], "train_cached_s": t_cache["work_seconds"],
            "train_speedup_cache": t_plain["work_seconds"] / t_cache["work_seconds"],
            "evaluate_fps_small": fps(e_small), "evaluate_fps_large": fps(e_large),
            "predict_batched_fps": fps(batched), "predict_per_file_fps": fps(per_file),
            "predict_speedup_batched": fps(batched) / fps(per_file),
            "evaluate_speedup_vs_per_file": fps(e_large) / fps(per_file),
            "rss_ratio_preprocess_main": pl["rss_main_mb"] / pn["rss_main_mb"],
            "rss_ratio_preprocess_tree": pl["rss_tree_mb"] / pn["rss_tree_mb"],
            "rss_ratio_evaluate": e_large["rss_main_mb"] / e_small["rss_main_mb"],
        }
        results["summary"] = summary
        m = results["machine"]
        print(f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
              f"{m['platform']}, Python {m['python']}")
        print(f"command: {results['command']}\n")
        print("| stage | files | time (s) | files/s | peak RSS main (MB) | peak RSS tree (MB) |")
        print("|---|---|---|---|---|---|")
        for r in stages:
            n = r.get("files")
            rate = f"{n / r['work_seconds']:.1f}" if n and "work_seconds" in r else "-"
            secs = r.get("work_seconds", r["seconds"])
            print(f"| {r['stage']} | {n or '-'} | {secs:.1f} | {rate} | {r['rss_main_mb']:.0f} | "
                  f"{r['rss_tree_mb']:.0f} |")
        s = summary
        print(f"\npreprocessing: all {cores} workers {s['preprocess_speedup_all_vs_1_large']:.2f}x "
              f"one worker at {large} files ({s['preprocess_speedup_all_vs_1_small']:.2f}x at "
              f"{small}: worker start-up weighs more); one worker at "
              f"{s['preprocess_1_share_of_floor']:.0%} of the decode+mel floor; {cores} "
              f"independent single-worker processes reach "
              f"{s['independent_processes_speedup_large']:.2f}x (this machine's ceiling)")
        print(f"training (10 epochs): feature cache {s['train_speedup_cache']:.1f}x faster "
              f"({s['train_plain_s']:.0f} s -> {s['train_cached_s']:.0f} s)")
        print(f"prediction: batched {s['predict_batched_fps']:.0f} files/s vs per-file "
              f"{s['predict_per_file_fps']:.1f} files/s = {s['predict_speedup_batched']:.1f}x; "
              f"evaluate.py end to end at {large} files "
              f"{s['evaluate_speedup_vs_per_file']:.1f}x the per-file rate")
        print(f"peak RSS {large} vs {small} files: preprocess main "
              f"{s['rss_ratio_preprocess_main']:.2f}x (tree {s['rss_ratio_preprocess_tree']:.2f}x),"
              f" evaluate {s['rss_ratio_evaluate']:.2f}x")
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults: {args.json}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
