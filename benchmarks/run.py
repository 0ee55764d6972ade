"""Speed and memory of the pipeline at ASVspoof-like scale, on this machine.

Not part of the test suite. Generates N synthetic utterances of realistic length (log-normal,
median 3 s like ASVspoof 2019 LA, 1-10 s, 16 kHz FLAC) and measures, with the machine stated:

- preprocessing files/s with 1 worker and with all cores, and two floors on the same files on
  one core: decoding and the log-mel alone (nothing written: the work no implementation can
  skip), and the same with a bare ``np.save`` of each array (the files left behind),
- training time of the default recipe (10 epochs, batch 16) with and without the feature cache,
- evaluation files/s: batched streaming prediction vs ``model.predict`` once per file,
- peak RSS (main process, whole process tree) of preprocessing and evaluation at two sizes,
- LCNN training throughput, vocoding with one and all workers, the API under concurrent uploads,
- the Whisper tiny encoder's feature extraction (``--model whisper``; needs
  requirements-whisper.txt): utterances/s and peak RSS on the ~4 s window, against the same
  window zero-padded to Whisper's 30 s input,
- AASIST (``--model aasist``): scoring utterances/s at batch 1, 8 and 32 with the time per
  part (front end, encoder, graph), fine-tuning utterances/s (AASIST and AASIST-L), and the
  official PyTorch model on the same windows when torch and its reference code are present.

Example::

    python benchmarks/run.py                      # 2,000 and 10,000 files (about 40 minutes)
    python benchmarks/run.py --files 500 2000 --train-files 500
    python benchmarks/run.py --only whisper       # one group of measurements
    python benchmarks/run.py --only aasist

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
from deepfake_detector.cli import HelpFormatter  # noqa: E402

SR = 16000
MEDIAN_SECONDS = 3.0
CORES = os.cpu_count()
GROUPS = ["preprocessing", "training", "families", "serving", "whisper", "aasist"]
OWN_INPUTS = {"whisper", "aasist"}  # groups that generate their own inputs (no corpus)
AASIST_REFERENCE = (Path(os.environ.get("DEEPFAKE_SHARED_DATA", REPO.parent / "shared" / "data"))
                    .parent / "models" / "aasist" / "reference" / "AASIST.py")


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


def run_stage(stage, kwargs, label):
    """Run `stages.STAGE(**kwargs)` in a fresh process; return wall seconds, the stage's own
    ``work_seconds`` and the peak RSS (MB) of the main process and of its whole process tree,
    sampled every 50 ms."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "stages.py"), stage,
                             json.dumps(kwargs)], cwd=REPO, env=env,
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


def build_parser():
    """The command line of the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--files", type=int, nargs=2, default=[2000, 10000], metavar=("SMALL", "LARGE"),
                    help="the two corpus sizes (preprocessing and evaluation, RSS comparison)")
    ap.add_argument("--train-files", type=int, default=2000,
                    help="utterances for the training comparison (80/20 split)")
    ap.add_argument("--per-file", type=int, default=200,
                    help="files scored one model.predict call at a time")
    ap.add_argument("--lcnn-epochs", type=int, default=3,
                    help="epochs of the LCNN training throughput measurement")
    ap.add_argument("--vocode-files", type=int, default=200,
                    help="corpus files whose bonafide half is vocoded (7 vocoders each)")
    ap.add_argument("--clients", type=int, default=32,
                    help="concurrent uploads in the API measurement")
    ap.add_argument("--whisper-files", type=int, default=256,
                    help="windows through the Whisper encoder (a quarter of them padded to 30 s)")
    ap.add_argument("--aasist-files", type=int, default=64,
                    help="windows scored (and trained on) in the AASIST measurements")
    ap.add_argument("--only", help="comma-separated groups to measure: " + ", ".join(GROUPS)
                    + " (default: all; training needs preprocessing's corpus, serving the "
                      "training run)")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--json", default="benchmarks/results.json", help="write results here")
    return ap


class Bench:
    """The corpus of one benchmark run, its protocol subsets, and the stages measured on them."""

    def __init__(self, work, small, large, train_files, corpus=True):
        self.work, self.small, self.large, self.cores = work, small, large, os.cpu_count()
        self.stages = []
        if not corpus:  # the Whisper and AASIST groups generate their own inputs
            return
        print(f"generating {large} utterances in {work} ...", flush=True)
        self.protocol, self.audio = make_corpus(work / "corpus", large)
        self.lines = self.protocol.read_text().splitlines()
        self.proto_small = self.subset("protocol_small.txt", self.lines[:small])
        self.proto_train = self.subset("protocol_train.txt", self.lines[:train_files])

    def subset(self, name, lines):
        path = self.work / name
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def stage(self, name, kwargs, label, **extra):
        r = run_stage(name, kwargs, label)
        r.update(extra)
        self.stages.append(r)
        print(f"  {label}: {r['seconds']:.1f} s, RSS main {r['rss_main_mb']:.0f} MB, "
              f"tree {r['rss_tree_mb']:.0f} MB", flush=True)
        return r

    def prep(self, proto, n, workers, name):
        return self.stage("preprocess", {"protocol": str(proto), "audio": str(self.audio),
                                         "out": str(self.work / name), "workers": workers},
                          f"preprocess {n} files, {workers} worker(s)", files=n, workers=workers)


def measure_preprocessing(b):
    """Floor, 1 and all workers at both sizes, independent processes."""
    small = {"protocol": b.proto_small, "audio": str(b.audio)}
    r = {"floor": b.stage("floor", small, f"decode+mel floor, {b.small} files", files=b.small),
         "floor_write": b.stage("floor_write", {**small, "out": str(b.work / "floor_write")},
                                f"decode+mel+np.save floor, {b.small} files", files=b.small)}
    r["p1"] = b.prep(b.proto_small, b.small, 1, "feat_small_w1")
    r["pn"] = b.prep(b.proto_small, b.small, b.cores, "feat_small_wn")
    r["pl1"] = b.prep(b.protocol, b.large, 1, "feat_large_w1")
    r["pl"] = b.prep(b.protocol, b.large, b.cores, "feat_large_wn")
    parts = [b.subset(f"protocol_part{k}.txt", b.lines[k::b.cores]) for k in range(b.cores)]
    r["pair"] = b.stage("independent", {"parts": parts, "audio": str(b.audio)},
                        f"{b.cores} independent 1-worker processes, {b.large} files in total",
                        files=b.large)
    return r


def measure_training_and_prediction(b, train_files, per_file):
    """Training with and without the feature cache; evaluate.py at both sizes; batched and
    per-file prediction."""
    b.prep(b.proto_train, train_files, b.cores, "feat_train")
    r = {}
    for cache in (True, False):
        r["cache" if cache else "plain"] = b.stage(
            "train", {"data": str(b.work / "feat_train"), "cache": cache,
                      "run": str(b.work / f"run_{'cache' if cache else 'plain'}"),
                      "cache_dir": str(b.work / "cache")},
            f"train 10 epochs, batch 16, {train_files} files, cache={cache}", files=train_files)
    run = str(b.work / "run_cache")
    for key, n, name in (("e_small", b.small, "feat_small_wn"), ("e_large", b.large,
                                                                 "feat_large_wn")):
        r[key] = b.stage("evaluate", {"run": run, "data": str(b.work / name),
                                      "out": str(b.work / f"eval_{name}")},
                         f"evaluate {n} files (batched)", files=n)
    small = str(b.work / "feat_small_wn")
    r["batched"] = b.stage("predict_batched", {"run": run, "data": small},
                           f"prediction only, batched ({b.small} files)", files=b.small)
    r["per_file"] = b.stage("predict_per_file", {"run": run, "data": small, "n": per_file},
                            f"prediction only, model.predict once per file ({per_file} files)",
                            files=per_file)
    return r


def measure_new_families(b, train_files, vocode_files, lcnn_epochs):
    """LCNN training throughput (utterances/s on the training part) and vocoding files/s with
    one worker and with all cores."""
    r = {"lcnn": b.stage("train_lcnn", {"data": str(b.work / "feat_train"),
                                        "run": str(b.work / "run_lcnn"), "epochs": lcnn_epochs},
                         f"train LCNN {lcnn_epochs} epochs, {train_files} files")}
    proto = b.subset("protocol_vocode.txt", b.lines[:vocode_files])
    for workers in (1, b.cores):
        r[f"vocode_{workers}"] = b.stage(
            "vocode", {"protocol": proto, "audio": str(b.audio),
                       "out": str(b.work / f"vocoded_w{workers}"), "workers": workers},
            f"vocode the bonafide of {vocode_files} files x 7 vocoders, {workers} worker(s)",
            workers=workers)
    return r


def measure_serving(b, clients):
    """The API under ``clients`` concurrent 3 s uploads, decoding inside the model lock (as
    before) and outside it (as now)."""
    run = str(b.work / "run_cache")
    return {f"serve_{k}": b.stage("serve_load", {"run": run, "decode_in_lock": k == "locked",
                                                 "clients": clients},
                                  f"API, {clients} concurrent 3 s uploads, decoding "
                                  f"{'inside' if k == 'locked' else 'outside'} the model lock")
            for k in ("locked", "unlocked")}


def measure_whisper(b, n):
    """The Whisper tiny encoder (random weights, same cost) on the ~4 s window with the
    feature cache's batch of 32 and with 8, and zero-padded to Whisper's 30 s input (batch 8:
    its attention over 1,500 positions needs ~12x the memory per example)."""
    from deepfake_detector import features

    r = {}
    for key, samples, count, batch in (("w4_32", features.CLIP_SAMPLES, n, 32),
                                       ("w4_8", features.CLIP_SAMPLES, n, 8),
                                       ("w30_8", 30 * SR, max(8, n // 4), 8)):
        r[key] = b.stage("whisper_features", {"samples": samples, "n": count,
                                              "batch_size": batch},
                         f"Whisper tiny encoder features, {samples / SR:.2f} s windows, "
                         f"batch {batch}", files=count)
    return r


def measure_aasist(b, n):
    """AASIST scoring at batch 1, 8 and 32, fine-tuning at batch 8 (AASIST, AASIST-L), and the
    official PyTorch code on the same windows (skipped without torch or its reference file)."""
    r = {f"aa_b{k}": b.stage("aasist_infer", {"config": "AASIST", "n": n if k > 1 else n // 4,
                                              "batch_size": k},
                             f"AASIST scoring, batch {k}", files=n if k > 1 else n // 4)
         for k in (1, 8, 32)}
    for config in ("AASIST", "AASIST-L"):
        r[f"aa_train_{config}"] = b.stage("aasist_train", {"config": config, "n": n // 2,
                                                          "batch_size": 8},
                                          f"{config} fine-tuning steps, batch 8", files=n // 2)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("  (official PyTorch AASIST skipped: pip install torch to compare)")
        return r
    if AASIST_REFERENCE.is_file():
        for k in (1, 8):
            r[f"aa_torch_b{k}"] = b.stage("aasist_torch", {"reference": str(AASIST_REFERENCE),
                                                           "n": n // 4 if k == 1 else n,
                                                           "batch_size": k},
                                          f"official PyTorch AASIST scoring, batch {k}",
                                          files=n // 4 if k == 1 else n)
    return r


def summarize(r):
    """The ratios the README quotes, from the stage results (of the groups measured)."""
    out = {}
    for group, keys in SUMMARY_NEEDS.items():
        if all(k in r for k in keys):
            out.update(SUMMARIES[group](r))
    return out


def _summary_core(r):
    fps = lambda s: s["files"] / s["work_seconds"]  # noqa: E731
    return {
        "floor_fps": fps(r["floor"]), "preprocess_1_fps": fps(r["p1"]),
        "preprocess_all_fps": fps(r["pn"]),
        "preprocess_speedup_all_vs_1_small": fps(r["pn"]) / fps(r["p1"]),
        "preprocess_speedup_all_vs_1_large": fps(r["pl"]) / fps(r["pl1"]),
        "independent_processes_speedup_large": fps(r["pair"]) / fps(r["pl1"]),
        "preprocess_1_share_of_floor": fps(r["p1"]) / fps(r["floor"]),
        "preprocess_1_share_of_write_floor": fps(r["p1"]) / fps(r["floor_write"]),
        "train_plain_s": r["plain"]["work_seconds"], "train_cached_s": r["cache"]["work_seconds"],
        "train_speedup_cache": r["plain"]["work_seconds"] / r["cache"]["work_seconds"],
        "evaluate_fps_small": fps(r["e_small"]), "evaluate_fps_large": fps(r["e_large"]),
        "predict_batched_fps": fps(r["batched"]), "predict_per_file_fps": fps(r["per_file"]),
        "predict_speedup_batched": fps(r["batched"]) / fps(r["per_file"]),
        "evaluate_speedup_vs_per_file": fps(r["e_large"]) / fps(r["per_file"]),
        "rss_ratio_preprocess_main": r["pl"]["rss_main_mb"] / r["pn"]["rss_main_mb"],
        "rss_ratio_preprocess_tree": r["pl"]["rss_tree_mb"] / r["pn"]["rss_tree_mb"],
        "rss_ratio_evaluate": r["e_large"]["rss_main_mb"] / r["e_small"]["rss_main_mb"],
    }


def _summary_families(r):
    fps = lambda s: s["files"] / s["work_seconds"]  # noqa: E731
    return {
        "lcnn_train_utt_per_s": r["lcnn"]["utterances_per_s"],
        "lcnn_train_rss_mb": r["lcnn"]["rss_main_mb"],
        "vocode_fps_1": fps(r["vocode_1"]), "vocode_fps_all": fps(r[f"vocode_{CORES}"]),
        "vocode_speedup_all_vs_1": fps(r[f"vocode_{CORES}"]) / fps(r["vocode_1"])}


def _summary_serving(r):
    return {f"api_{k}_{m}": r[f"serve_{k}"][m] for k in ("locked", "unlocked")
            for m in ("requests_per_s", "p50_s", "p95_s")}


def _summary_whisper(r):
    return {"whisper_4s_b32_utt_per_s": r["w4_32"]["utterances_per_s"],
            "whisper_4s_b8_utt_per_s": r["w4_8"]["utterances_per_s"],
            "whisper_30s_b8_utt_per_s": r["w30_8"]["utterances_per_s"],
            "whisper_speedup_trimmed_vs_padded": r["w4_8"]["utterances_per_s"]
            / r["w30_8"]["utterances_per_s"],
            "whisper_4s_b32_rss_mb": r["w4_32"]["rss_main_mb"],
            "whisper_4s_b8_rss_mb": r["w4_8"]["rss_main_mb"],
            "whisper_30s_b8_rss_mb": r["w30_8"]["rss_main_mb"]}


def _summary_aasist(r):
    out = {f"aasist_b{k}_utt_per_s": r[f"aa_b{k}"]["utterances_per_s"] for k in (1, 8, 32)}
    out.update({f"aasist_b8_{p}_ms": r["aa_b8"][f"{p}_ms"] for p in ("front", "encoder", "graph")})
    out.update({f"aasist_train_{c}_utt_per_s": r[f"aa_train_{c}"]["utterances_per_s"]
                for c in ("AASIST", "AASIST-L")})
    out.update({f"torch_b{k}_utt_per_s": r[f"aa_torch_b{k}"]["utterances_per_s"]
                for k in (1, 8) if f"aa_torch_b{k}" in r})
    return out


SUMMARIES = {"core": _summary_core, "families": _summary_families,
             "serving": _summary_serving, "whisper": _summary_whisper, "aasist": _summary_aasist}
SUMMARY_NEEDS = {"core": ("floor", "floor_write", "p1", "pn", "pl", "pl1", "pair", "plain",
                          "cache", "e_small", "e_large", "batched", "per_file"),
                 "families": ("lcnn", "vocode_1", f"vocode_{CORES}"),
                 "serving": ("serve_locked", "serve_unlocked"),
                 "whisper": ("w4_32", "w4_8", "w30_8"),
                 "aasist": ("aa_b1", "aa_b8", "aa_b32", "aa_train_AASIST", "aa_train_AASIST-L")}


def print_results(results, cores, small, large):
    """The table and the ratios, as README's docs/speed.md shows them."""
    m, s = results["machine"], results["summary"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
          f"{m['platform']}, Python {m['python']}")
    print(f"command: {results['command']}\n")
    print("| stage | files | time (s) | files/s | peak RSS main (MB) | peak RSS tree (MB) |")
    print("|---|---|---|---|---|---|")
    for r in results["stages"]:
        n = r.get("files")
        rate = f"{n / r['work_seconds']:.1f}" if n and "work_seconds" in r else "-"
        secs = r.get("work_seconds", r["seconds"])
        print(f"| {r['stage']} | {n or '-'} | {secs:.1f} | {rate} | {r['rss_main_mb']:.0f} | "
              f"{r['rss_tree_mb']:.0f} |")
    if "floor_fps" in s:
        print_core(s, cores, small, large)
    if "lcnn_train_utt_per_s" in s:
        print(f"LCNN training: {s['lcnn_train_utt_per_s']:.0f} utterances/s (peak RSS "
              f"{s['lcnn_train_rss_mb']:.0f} MB); vocoding: {s['vocode_fps_1']:.1f} files/s "
              f"with one worker, {s['vocode_fps_all']:.1f} with {cores} = "
              f"{s['vocode_speedup_all_vs_1']:.2f}x")
    if "api_unlocked_requests_per_s" in s:
        print(f"API: {s['api_unlocked_requests_per_s']:.1f} requests/s, p95 latency "
              f"{s['api_unlocked_p95_s']:.1f} s with decoding outside the model lock; "
              f"{s['api_locked_requests_per_s']:.1f} requests/s, p95 "
              f"{s['api_locked_p95_s']:.1f} s with decoding inside it (before)")
    if "whisper_4s_b32_utt_per_s" in s:
        print(f"Whisper tiny encoder: {s['whisper_4s_b32_utt_per_s']:.1f} utterances/s on the "
              f"4 s window (batch 32, peak RSS {s['whisper_4s_b32_rss_mb']:.0f} MB); at batch "
              f"8 {s['whisper_4s_b8_utt_per_s']:.1f} vs {s['whisper_30s_b8_utt_per_s']:.1f} "
              f"padded to 30 s = {s['whisper_speedup_trimmed_vs_padded']:.1f}x (peak RSS "
              f"{s['whisper_4s_b8_rss_mb']:.0f} vs {s['whisper_30s_b8_rss_mb']:.0f} MB)")
    if "aasist_b1_utt_per_s" in s:
        torch = (f"; official PyTorch {s['torch_b1_utt_per_s']:.2f} (batch 1) and "
                 f"{s['torch_b8_utt_per_s']:.2f} (batch 8)" if "torch_b8_utt_per_s" in s else "")
        print(f"AASIST scoring: {s['aasist_b1_utt_per_s']:.2f} utterances/s at batch 1, "
              f"{s['aasist_b8_utt_per_s']:.2f} at 8, {s['aasist_b32_utt_per_s']:.2f} at 32"
              f"{torch}; per utterance at batch 8: front end {s['aasist_b8_front_ms']:.0f} ms, "
              f"encoder {s['aasist_b8_encoder_ms']:.0f} ms, graph {s['aasist_b8_graph_ms']:.0f} "
              f"ms; fine-tuning {s['aasist_train_AASIST_utt_per_s']:.2f} (AASIST) and "
              f"{s['aasist_train_AASIST-L_utt_per_s']:.2f} (AASIST-L) utterances/s")


def print_core(s, cores, small, large):
    """The preprocessing, training and prediction lines of `print_results`."""
    print(f"\npreprocessing: all {cores} workers {s['preprocess_speedup_all_vs_1_large']:.2f}x "
          f"one worker at {large} files ({s['preprocess_speedup_all_vs_1_small']:.2f}x at "
          f"{small}: worker start-up weighs more); one worker at "
          f"{s['preprocess_1_share_of_floor']:.0%} of the decode+mel floor "
          f"({s['preprocess_1_share_of_write_floor']:.0%} of decode+mel+np.save); {cores} "
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    small, large = args.files
    work = Path(args.workdir or tempfile.mkdtemp(prefix="deepfake-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "command": " ".join(["python", "benchmarks/run.py"]
                                                         + (argv or sys.argv[1:]))}
    groups = GROUPS if not args.only else [g.strip() for g in args.only.split(",")]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise SystemExit(f"error: unknown --only group(s) {unknown}; choose from {GROUPS}")
    try:
        b = Bench(work, small, large, args.train_files, corpus=bool(set(groups) - OWN_INPUTS))
        r = {}
        if "preprocessing" in groups:
            r.update(measure_preprocessing(b))
        if "training" in groups:
            r.update(measure_training_and_prediction(b, args.train_files, args.per_file))
        if "families" in groups:
            r.update(measure_new_families(b, args.train_files, args.vocode_files,
                                          args.lcnn_epochs))
        if "serving" in groups:
            r.update(measure_serving(b, args.clients))
        if "whisper" in groups:
            r.update(measure_whisper(b, args.whisper_files))
        if "aasist" in groups:
            r.update(measure_aasist(b, args.aasist_files))
        results.update(stages=b.stages, summary=summarize(r))
        print_results(results, b.cores, small, large)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults: {args.json}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
