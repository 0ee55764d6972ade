"""The stages that benchmarks/run.py times, each run in a fresh process:

    python benchmarks/stages.py STAGE '{"keyword": "arguments"}'

prints one JSON line ``{"work_seconds": ...}`` (the timed part only, after any warm-up). A fresh
process per stage keeps one stage's allocator, thread pools and compiled graphs from changing
another's numbers.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def floor(protocol, audio):
    """Decoding and the log-mel computation alone, one core, nothing written: the work no
    implementation can skip."""
    from threadpoolctl import threadpool_limits

    import features

    ids = [line.split()[1] for line in open(protocol)]
    t = time.perf_counter()
    with threadpool_limits(1):  # one core, like one preprocessing worker
        for u in ids:
            features.compute_features(features.load_audio(f"{audio}/{u}.flac"))
    return time.perf_counter() - t


def preprocess(protocol, audio, out, workers):
    """preprocess.py's pipeline with ``workers`` processes."""
    import preprocess as P

    t = time.perf_counter()
    P.preprocess(protocol, audio, out, workers=workers, progress=False)
    return time.perf_counter() - t


def independent(parts, audio):
    """One single-worker preprocessing process per part, all at once: the machine's own
    ceiling for parallel preprocessing."""
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "preprocess", json.dumps(
        {"protocol": p, "audio": audio, "out": p + ".out", "workers": 1})],
        stdout=subprocess.DEVNULL) for p in parts]
    if not all(p.wait() == 0 for p in procs):
        raise RuntimeError("a preprocessing process failed")
    return time.perf_counter() - t


def train(data, run, cache, cache_dir):
    """The default recipe (10 epochs, batch 16), random-init backbone."""
    import train as T

    t = time.perf_counter()
    T.train(data, run, weights="none", verbose=0, feature_cache=cache, cache_dir=cache_dir)
    return time.perf_counter() - t


def evaluate(run, data, out):
    """evaluate.py end to end (loading, prediction, every metric and output but the plots)."""
    import evaluate as E

    t = time.perf_counter()
    E.evaluate(run, data=data, out=out, plots=False)
    return time.perf_counter() - t


def predict_batched(run, data):
    """Prediction alone, batched and streamed as evaluate.py runs it, after a warm-up."""
    import data_loader
    import model
    import runs

    m, _, _ = runs.load_run(run)
    df = data_loader.load_manifest(data)
    ds = data_loader.make_dataset(df, model.PREDICT_BATCH_SIZE, with_labels=False)
    hidden, kernel, bias = model.logit_parts(m)  # what model.predict_logits runs
    hidden.predict(ds.take(1), verbose=0)  # warm-up (graph tracing), not timed, as per file
    t = time.perf_counter()
    model.logits_from_hidden(hidden.predict(ds, verbose=0), kernel, bias)
    return time.perf_counter() - t


def predict_per_file(run, data, n):
    """One ``model.predict`` call per file (the original project's loop), after a warm-up."""
    import data_loader
    import runs

    m, _, _ = runs.load_run(run)
    df = data_loader.load_manifest(data).iloc[:n]
    x = data_loader.to_model_input(np.load(df["path"].iloc[0]))[None]
    m.predict(x, verbose=0)  # warm-up, not timed
    t = time.perf_counter()
    for p in df["path"]:
        m.predict(data_loader.to_model_input(np.load(p))[None], verbose=0)
    return time.perf_counter() - t


STAGES = {f.__name__: f for f in (floor, preprocess, independent, train, evaluate,
                                  predict_batched, predict_per_file)}

if __name__ == "__main__":
    name, kwargs = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"work_seconds": STAGES[name](**kwargs)}))
