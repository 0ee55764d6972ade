"""AASIST against the CPU's limit: floating-point operations per utterance, the rate the port
reaches, the machine's measured peak, and what oneDNN's and XLA's options change.

    python benchmarks/aasist_flops.py --json benchmarks/aasist_flops.json

In one process, on the same 2 cores:

- **FLOPs per utterance** of the port (``--config`` AASIST or AASIST-L, random weights: the
  same cost as trained ones), counted by TensorFlow's profiler on the frozen inference graph
  of one 64,600-sample window (a multiply-add counts 2);
- **the port's rate**: utterances/s at ``--batch-size`` (predict.py's batch, 8) after a warm-up,
  and the GFLOP/s that makes;
- **the machine's peak**, float32: a 2,048 x 2,048 matrix product and the largest convolution
  of the encoder alone (a 3 x 3, 32 -> 32 channel Conv2D over its first block's map), each at
  its best of ``--repeat`` runs;
- **options** (each in a fresh process, because they are read when TensorFlow starts):
  ``ONEDNN_DEFAULT_FPMATH_MODE=BF16`` (float32 layers computed in bfloat16 on CPUs with AMX or
  AVX512-BF16) and XLA (``jit_compile``) on the whole model: speed, and the largest change of
  any logit against plain float32 on the same windows (kept only when within 1e-4 and at
  least 5% faster).

Prints Markdown and writes ``--json``. Times vary by 20-30% on a shared 2-core VM.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import startup  # noqa: E402 - benchmarks/startup.py: publish
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402

# -----------------------------------------------------------------------------
SAMPLES = 64_600  # AASIST's window
BATCH = 8
UTTERANCES = 32
REPEAT = 5
TOLERANCE = 1e-4  # largest logit change an option may make to be kept
FASTER = 1.05  # and it must be at least this much faster than plain float32 (beyond noise)
OPTIONS = {"float32 (default)": {}, "oneDNN bf16 math": {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"},
           "XLA jit_compile": {"DEEPFAKE_BENCH_XLA": "1"}}
# -----------------------------------------------------------------------------


def waves(n, seed=0):
    """``n`` random windows at a speech-like level, shape (n, SAMPLES), float32."""
    return (0.1 * np.random.default_rng(seed).standard_normal((n, SAMPLES))).astype(np.float32)


def build(config):
    import keras

    from deepfake_detector.models import aasist

    keras.utils.set_random_seed(0)
    return aasist.build_aasist(config)


def count_flops(model):
    """Floating-point operations of one window through ``model`` (inference), from
    TensorFlow's profiler on the frozen graph (2 per multiply-add)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, SAMPLES], tf.float32))
    graph = convert_variables_to_constants_v2(fn).graph
    opts = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return int(model_analyzer.profile(graph, options=opts).total_float_ops)


def best_seconds(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def machine_peak(repeat):
    """GFLOP/s of a float32 2,048^2 matrix product and of the encoder's largest convolution."""
    import tensorflow as tf

    a = tf.random.normal([2048, 2048])
    matmul = 2 * 2048 ** 3 / best_seconds(lambda: tf.linalg.matmul(a, a).numpy(), repeat)
    # the first residual block's 3x3 convolution: (time 21,490, frequency 23, 32 channels)
    x = tf.random.normal([BATCH, 21490, 23, 32])
    k = tf.random.normal([3, 3, 32, 32])
    conv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    flops = 2 * BATCH * 21490 * 23 * 32 * 32 * 9
    return {"matmul_gflops": matmul / 1e9,
            "conv_gflops": flops / best_seconds(lambda: conv().numpy(), repeat) / 1e9}


def rate(config, batch_size, n, xla=False):
    """(utterances/s, logits of the first batch) of the port at ``batch_size``."""
    import tensorflow as tf

    model = build(config)
    fn = tf.function(lambda x: model(x, training=False), jit_compile=xla)
    x = tf.constant(waves(batch_size))
    logits = fn(x).numpy().reshape(-1)  # warm-up (tracing, compiling)
    batches = -(-n // batch_size)
    t = time.perf_counter()
    for _ in range(batches):
        fn(x).numpy()
    return batches * batch_size / (time.perf_counter() - t), logits


def one_option(config, batch_size, n, repeat, with_peak):
    """In this process (its environment set by the caller): every number of one option."""
    out = {}
    if with_peak:
        out.update(machine_peak(repeat))
        out["flops_per_utterance"] = count_flops(build(config))
    ups, logits = rate(config, batch_size, n, xla=os.environ.get("DEEPFAKE_BENCH_XLA") == "1")
    out.update(utterances_per_s=ups, logits=logits.tolist())
    return out


def measure(config, batch_size, n, repeat):
    """Each option in a fresh process; the FLOP count and peaks in the default one."""
    here, results = str(Path(__file__).resolve()), {}
    for name, env in OPTIONS.items():
        argv = [sys.executable, here, "--config", config, "--batch-size", str(batch_size),
                "--utterances", str(n), "--repeat", str(repeat), "--one"]
        if not env:
            argv.append("--with-peak")
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env})
        if proc.returncode:
            results[name] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {name}: {results[name]['utterances_per_s']:.2f} utterances/s", flush=True)
    base = results["float32 (default)"]
    for r in results.values():
        if "logits" in r:
            r["max_logit_change"] = float(np.max(np.abs(np.subtract(r["logits"],
                                                                     base["logits"]))))
            r["gflops"] = base["flops_per_utterance"] * r["utterances_per_s"] / 1e9
            r["kept"] = (r["max_logit_change"] <= TOLERANCE
                         and r["utterances_per_s"] >= FASTER * base["utterances_per_s"])
    return {"config": config, "batch_size": batch_size, "options": results,
            "flops_per_utterance": base["flops_per_utterance"],
            "matmul_gflops": base["matmul_gflops"], "conv_gflops": base["conv_gflops"]}


def report(r):
    lines = [f"{r['config']}: {r['flops_per_utterance'] / 1e9:.2f} GFLOP per utterance; "
             f"machine peak (float32): matmul {r['matmul_gflops']:.0f} GFLOP/s, the encoder's "
             f"largest convolution alone {r['conv_gflops']:.0f} GFLOP/s", "",
             f"| option (batch {r['batch_size']}) | utterances/s | GFLOP/s | of matmul peak | "
             "of conv peak | largest logit change | kept |", "|---|---|---|---|---|---|---|"]
    base = r["options"]["float32 (default)"]
    for name, o in r["options"].items():
        if "error" in o:
            lines.append(f"| {name} | failed: {o['error']} | | | | | no |")
            continue
        lines.append(f"| {name} | {o['utterances_per_s']:.2f} | {o['gflops']:.0f} | "
                     f"{o['gflops'] / r['matmul_gflops']:.0%} | "
                     f"{o['gflops'] / r['conv_gflops']:.0%} | {o['max_logit_change']:.1e} | "
                     f"{'-' if o is base else 'yes' if o['kept'] else 'no'} |")
    return "\n".join(lines)


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--config", choices=["AASIST", "AASIST-L"], default="AASIST",
                    help="which of the two published architectures")
    ap.add_argument("--batch-size", type=number(int, 1, 64), default=BATCH,
                    help="windows per model call")
    ap.add_argument("--utterances", type=number(int, 1, 10_000), default=UTTERANCES,
                    help="windows timed per option (after a warm-up batch)")
    ap.add_argument("--repeat", type=number(int, 1, 100), default=REPEAT,
                    help="runs of each peak measurement (the best is kept)")
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--one", action="store_true",
                    help="internal: measure one option in this process, print JSON")
    ap.add_argument("--with-peak", action="store_true",
                    help="internal, with --one: also the FLOP count and the machine's peak")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(one_option(args.config, args.batch_size, args.utterances, args.repeat,
                                    args.with_peak)))
        return None
    r = measure(args.config, args.batch_size, args.utterances, args.repeat)
    return startup.publish(report(r), r, args.json)


if __name__ == "__main__":
    main()
