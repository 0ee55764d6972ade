"""The stages that benchmarks/run.py times, each run in a fresh process:

    python benchmarks/stages.py STAGE '{"keyword": "arguments"}'

prints one JSON line ``{"work_seconds": ...}`` (the timed part only, after any warm-up; some
stages add numbers of their own). A fresh
process per stage keeps one stage's allocator, thread pools and compiled graphs from changing
another's numbers.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def floor(protocol, audio):
    """Decoding and the log-mel computation alone, one core, nothing written: the work no
    implementation can skip."""
    from threadpoolctl import threadpool_limits

    from deepfake_detector import features

    ids = [line.split()[1] for line in open(protocol)]
    t = time.perf_counter()
    with threadpool_limits(1):  # one core, like one preprocessing worker
        for u in ids:
            features.compute_features(features.load_audio(f"{audio}/{u}.flac"))
    return time.perf_counter() - t


def floor_write(protocol, audio, out):
    """The floor plus writing each array with a bare ``np.save`` to its final name (no
    temporary file, no rename, no checks): the least any program that leaves the same
    ``.npy`` files behind must do. Creating a file costs the filesystem 0.1-0.3 ms here."""
    from threadpoolctl import threadpool_limits

    from deepfake_detector import features

    os.makedirs(out, exist_ok=True)
    ids = [line.split()[1] for line in open(protocol)]
    t = time.perf_counter()
    with threadpool_limits(1):
        for u in ids:
            x = features.compute_features(features.load_audio(f"{audio}/{u}.flac"))
            np.save(f"{out}/{u}.npy", x, allow_pickle=False)
    return time.perf_counter() - t


def preprocess(protocol, audio, out, workers):
    """preprocess.py's pipeline with ``workers`` processes; every array computed, even in a
    reused ``--workdir`` (resuming would keep the last run's arrays and time nothing)."""
    import preprocess as P

    t = time.perf_counter()
    P.preprocess(protocol, audio, out, workers=workers, progress=False, overwrite=True)
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
    from deepfake_detector import datasets
    from deepfake_detector import models as model
    from deepfake_detector import runs

    m, _, _ = runs.load_run(run)
    df = datasets.load_manifest(data)
    ds = datasets.make_dataset(df, model.PREDICT_BATCH_SIZE, with_labels=False)
    hidden, kernel, bias = model.logit_parts(m)  # what model.predict_logits runs
    hidden.predict(ds.take(1), verbose=0)  # warm-up (graph tracing), not timed, as per file
    t = time.perf_counter()
    model.logits_from_hidden(hidden.predict(ds, verbose=0), kernel, bias)
    return time.perf_counter() - t


def predict_per_file(run, data, n):
    """One ``model.predict`` call per file (the original project's loop), after a warm-up."""
    from deepfake_detector import datasets
    from deepfake_detector import runs

    m, _, _ = runs.load_run(run)
    df = datasets.load_manifest(data).iloc[:n]
    x = datasets.to_model_input(np.load(df["path"].iloc[0]))[None]
    m.predict(x, verbose=0)  # warm-up, not timed
    t = time.perf_counter()
    for p in df["path"]:
        m.predict(datasets.to_model_input(np.load(p))[None], verbose=0)
    return time.perf_counter() - t


def train_lcnn(data, run, epochs):
    """The LCNN family trained end to end on spectrograms (no feature cache), timed from the
    first to the last epoch's end; returns seconds and utterances seen per second."""
    import keras

    import train as T

    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            times.append(time.perf_counter())

        def on_train_end(self, logs=None):
            times.append(time.perf_counter())

    t = time.perf_counter()
    run_dir, _ = T.train(data, run, model="lcnn", epochs=epochs, verbose=0, callbacks=[Clock()],
                         calibrate="none")
    n = int((pd.read_csv(Path(run_dir) / "split.csv")["part"] == "train").sum())
    # the first epoch traces the graph: utterances/s from the later ones
    steady = (times[-1] - times[1]) if len(times) > 2 else (times[-1] - times[0])
    return time.perf_counter() - t, {"utterances_per_s": n * (len(times) - 2) / steady
                                     if len(times) > 2 else n / steady}


def vocode(protocol, audio, out, workers):
    """scripts/make_vocoded_spoofs.py over the bonafide utterances of a protocol."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import make_vocoded_spoofs as V

    sources = V.bonafide_sources(protocol=protocol, audio_dir=audio)
    t = time.perf_counter()
    summary = V.run(sources, out, V.VOCODERS, seed=0, workers=workers, progress=False)
    return time.perf_counter() - t, {"files": summary["written"] + summary["failed"]}


def serve_load(run, decode_in_lock, clients=32, seconds=3.0):
    """serve.py's app under ``clients`` concurrent uploads of a ``seconds`` recording (uvicorn
    on loopback, in this process; the clients are threads): decoding inside the model lock, as
    before, or outside it, as now. Returns the wall time, the throughput and latency
    percentiles."""
    import io
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import soundfile as sf
    import uvicorn

    import serve

    app = serve.create_app(run, decode_in_lock=decode_in_lock, wait_seconds=600)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    t = np.arange(int(seconds * 44100)) / 44100  # 44.1 kHz stereo: decoding has work to do
    y = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1) * 0.3
    buf = io.BytesIO()
    sf.write(buf, y, 44100, format="WAV", subtype="PCM_16")
    data, url = buf.getvalue(), f"http://127.0.0.1:{port}/predict"

    def one(_):
        start = time.perf_counter()
        r = httpx.post(url, files={"file": ("clip.wav", data)}, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - start

    one(0)  # warm-up: graph tracing, lazy imports
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latency = np.array(list(pool.map(one, range(clients))))
    wall = time.perf_counter() - start
    server.should_exit = True
    return wall, {"files": clients, "requests_per_s": clients / wall,
                  "p50_s": float(np.percentile(latency, 50)),
                  "p95_s": float(np.percentile(latency, 95))}


def whisper_features(samples, n, batch_size, preset="random:tiny"):
    """The frozen part of ``--model whisper`` (log-mel layer, encoder, mean pooling), as the
    feature cache runs it: ``n`` windows of ``samples`` samples in batches, after a warm-up
    batch. An untrained encoder of the preset's architecture costs what the trained one
    does."""
    import keras

    from deepfake_detector import models as M
    from deepfake_detector.models import whisper

    keras.utils.set_random_seed(0)
    extractor = M.feature_extractor(whisper.build_whisper(preset, (samples,)))
    x = np.random.default_rng(0).standard_normal((batch_size, samples)).astype(np.float32)
    extractor.predict_on_batch(x * 0.1)  # warm-up: graph tracing
    batches = -(-n // batch_size)
    t = time.perf_counter()
    for _ in range(batches):
        extractor.predict_on_batch(x * 0.1)
    seconds = time.perf_counter() - t
    return seconds, {"files": batches * batch_size,
                     "utterances_per_s": batches * batch_size / seconds}


def _waves(n, seed=0):
    """``n`` random 64,600-sample windows at a speech-like level."""
    return (0.1 * np.random.default_rng(seed).standard_normal((n, 64_600))).astype(np.float32)


def aasist_infer(config, n, batch_size):
    """AASIST scoring (``--model aasist``, random weights: the same cost as trained ones): ``n``
    windows in batches of ``batch_size`` after a warm-up batch, as evaluate.py and predict.py
    run it (``predict_on_batch``); and, at that batch size, the milliseconds per utterance of
    the front end (sinc filters, pooling, batch norm), the residual encoder (the sub-model up to
    its output, less the front end) and the graph part with the output layer (fed the encoder's
    output)."""
    import keras

    from deepfake_detector.models import aasist

    keras.utils.set_random_seed(0)
    model = aasist.build_aasist(config)
    x = _waves(batch_size)
    front = keras.Model(model.input, model.get_layer("first_selu").output)
    encoder = keras.Model(model.input, model.get_layer("encoder5_pool").output)
    e = keras.Input(encoder.output.shape[1:])
    graph = keras.Model(e, model.get_layer("p_spoof")(model.get_layer("graph")(e)))
    reps = max(1, 16 // batch_size)

    def per_utterance(sub, inputs):
        sub.predict_on_batch(inputs)  # warm-up: graph tracing
        t = time.perf_counter()
        for _ in range(reps):
            sub.predict_on_batch(inputs)
        return (time.perf_counter() - t) / (reps * batch_size) * 1e3

    ms = {"front_ms": per_utterance(front, x)}
    ms["encoder_ms"] = per_utterance(encoder, x) - ms["front_ms"]
    ms["graph_ms"] = per_utterance(graph, encoder.predict_on_batch(x))
    model.predict_on_batch(x)  # warm-up
    batches = -(-n // batch_size)
    t = time.perf_counter()
    for _ in range(batches):
        model.predict_on_batch(x)
    seconds = time.perf_counter() - t
    return seconds, {"files": batches * batch_size,
                     "utterances_per_s": batches * batch_size / seconds, **ms}


def aasist_train(config, n, batch_size):
    """AASIST fine-tuning steps (every layer trains, as ``train.py --model aasist --init``):
    ``n`` windows in batches, after a warm-up step."""
    import keras

    from deepfake_detector.models import aasist, common

    keras.utils.set_random_seed(0)
    model = common.compile_model(aasist.build_aasist(config), 1e-5)
    x, y = _waves(batch_size), np.tile([0.0, 1.0], batch_size // 2 + 1)[:batch_size]
    model.train_on_batch(x, y)
    batches = -(-n // batch_size)
    t = time.perf_counter()
    for _ in range(batches):
        model.train_on_batch(x, y)
    seconds = time.perf_counter() - t
    return seconds, {"files": batches * batch_size,
                     "utterances_per_s": batches * batch_size / seconds}


def aasist_torch(reference, n, batch_size, config="AASIST"):
    """The official PyTorch AASIST (its own model code, ``reference/AASIST.py`` of the shared
    checkpoints folder; needs ``pip install torch``) on the same windows, eval mode, no
    gradient, all cores: the speed the port is compared with."""
    import importlib.util

    import torch

    from deepfake_detector.models import aasist

    spec = importlib.util.spec_from_file_location("official_aasist", reference)
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    torch.manual_seed(0)
    model = official.Model(aasist.CONFIGS[config]).eval()
    x = torch.from_numpy(_waves(batch_size))
    batches = -(-n // batch_size)
    with torch.no_grad():
        model(x)
        t = time.perf_counter()
        for _ in range(batches):
            model(x)
    seconds = time.perf_counter() - t
    return seconds, {"files": batches * batch_size,
                     "utterances_per_s": batches * batch_size / seconds,
                     "torch": torch.__version__, "threads": torch.get_num_threads()}


def whisper_engine(engine, source, n, batch_size, frames=400):
    """The Whisper encoder alone on log-mel inputs (batch, frames, mels), after a warm-up
    batch: the imported preset run by Keras (``engine="keras"``, ``source`` = the preset
    folder) or CTranslate2's own ``Whisper.encode`` (``"ctranslate2"``, ``source`` = the
    CTranslate2 model folder; float32 compute, one thread per core)."""
    x = 0.5 * np.random.default_rng(0).standard_normal((batch_size, frames, 80))
    x = x.astype(np.float32)
    if engine == "keras":
        from deepfake_detector.models import whisper

        enc, _ = whisper.whisper_encoder(source)
        step = lambda: enc.predict_on_batch(x)  # noqa: E731
    else:
        import ctranslate2

        model = ctranslate2.models.Whisper(source, device="cpu", compute_type="float32",
                                           intra_threads=os.cpu_count())
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(x.transpose(0, 2, 1)))
        step = lambda: model.encode(view, to_cpu=True)  # noqa: E731
    step()
    batches = -(-n // batch_size)
    t = time.perf_counter()
    for _ in range(batches):
        step()
    seconds = time.perf_counter() - t
    return seconds, {"files": batches * batch_size,
                     "utterances_per_s": batches * batch_size / seconds}


STAGES = {f.__name__: f for f in (serve_load, floor, floor_write, preprocess, independent, train,
                                  evaluate, predict_batched, predict_per_file, train_lcnn, vocode,
                                  whisper_features, aasist_infer, aasist_train, aasist_torch,
                                  whisper_engine)}

if __name__ == "__main__":
    name, kwargs = sys.argv[1], json.loads(sys.argv[2])
    result = STAGES[name](**kwargs)
    seconds, extra = result if isinstance(result, tuple) else (result, {})
    print(json.dumps({"work_seconds": seconds, **extra}))
