"""Cost of the robust recipe's parts: each waveform augmentation per utterance, and the training
throughput of the ways to fine-tune with it, on this machine.

Not part of the test suite. Prints one table and writes ``--out`` (JSON)::

    python benchmarks/augment.py                      # 32 utterances of 64,600 samples
    python benchmarks/augment.py --files 16 --skip-models

1. **Augmentation**, milliseconds per 4 s utterance (64,600 samples at 16 kHz), one process:
   every RawBoost algorithm (`deepfake_detector.augment.rawboost`), every codec and channel
   step (`deepfake_detector.augment.channel`), and one augmented view as scripts/degrade_audio.py
   makes it
   (RawBoost 5 + the channel at p = 0.5). Genuine mini ASVspoof utterances when ``../shared``
   is there, else tones.
2. **Training throughput**, utterances per second (all cores), random weights of the same
   architectures (the speed does not depend on the weights): AASIST-L's encoder pass (what
   ``--freeze-encoder`` computes once per utterance and view), its graph back end trained on
   cached features (batch 32), and full fine-tuning of every layer (batch 8) for contrast;
   the Whisper tiny encoder pass (``random:tiny``, tiny.en's shape) and its top-2-layer
   fine-tuning (batch 16); and on-the-fly augmentation (``train.py --rawboost 5 --channel
   codec,dropout,reverb``: read, augment, window) as an input pipeline of one process.

Timings on shared machines are noisy: compare the ratios printed in one run.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from deepfake_detector import augment, features  # noqa: E402
from deepfake_detector.augment import channel, rawboost  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402

SAMPLES, SR = 64_600, 16_000
MINI = REPO.parent / "shared" / "data" / "asvspoof2019_la_mini" / "LA" / "ASVspoof2019_LA_train"


def utterances(n):
    """``n`` waveforms of `SAMPLES` (genuine when ../shared is there) and their source files."""
    files = sorted((MINI / "flac").glob("*.flac"))[:n]
    if files:
        return [features.fit_length(features.load_audio(f), SAMPLES) for f in files], files
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLES) / SR
    return [(0.3 * np.sin(2 * np.pi * (120 + 10 * i) * t) + 0.01 * rng.standard_normal(SAMPLES))
            .astype(np.float32) for i in range(n)], []


def per_utterance_ms(fn, ys):
    """Mean milliseconds of ``fn(y, rng)`` over ``ys`` (after one warm-up call)."""
    fn(ys[0], np.random.default_rng(0))
    t = time.perf_counter()
    for i, y in enumerate(ys):
        fn(y, np.random.default_rng(i))
    return 1000 * (time.perf_counter() - t) / len(ys)


def augmentation_costs(ys):
    """{name: ms per utterance} of every augmentation."""
    costs = {f"rawboost {a} ({rawboost.NAMES[a]})":
             per_utterance_ms(lambda y, r, a=a: rawboost.rawboost(y, a, r), ys)
             for a in rawboost.ALGORITHMS}
    for name in channel.CODECS:
        costs[f"codec {name}"] = per_utterance_ms(lambda y, r, n=name: channel.codec(y, n, r), ys)
    costs["dropout"] = per_utterance_ms(lambda y, r: channel.dropout(y, r), ys)
    costs["reverb (room simulated per utterance)"] = per_utterance_ms(channel.reverb, ys)
    costs["view: rawboost 5 + channel p=0.5"] = per_utterance_ms(
        lambda y, r: channel.channel(rawboost.rawboost(y, 5, r), r, p=0.5), ys)
    return costs


def throughput(step, n, batch):
    """Utterances/s of ``step(batch)`` over ``n`` utterances, after one warm-up batch."""
    step(batch)
    t = time.perf_counter()
    for _ in range(max(1, n // batch)):
        step(batch)
    return max(1, n // batch) * batch / (time.perf_counter() - t)


def model_throughputs(n, files):
    """{name: utterances/s} of the training paths (module docstring)."""
    from deepfake_detector import models as M

    params = features.feature_params(kind="waveform", clip_samples=SAMPLES)
    rng = np.random.default_rng(0)
    wave = lambda b: rng.uniform(-0.5, 0.5, (b, SAMPLES)).astype(np.float32)  # noqa: E731
    labels = lambda b: (np.arange(b) % 2).astype(np.float32)  # noqa: E731
    out = {}
    model = M.build("aasist", params, preset="AASIST-L", freeze_encoder=True)
    extractor = M.feature_extractor(model)
    out["AASIST-L encoder pass (cached once per view), batch 32"] = throughput(
        lambda b: extractor.predict_on_batch(wave(b)), n, 32)
    feats = extractor.predict_on_batch(wave(32))
    head = M.head_model(model, steps_per_execution=1)
    out["AASIST-L back end on cached features (--freeze-encoder), batch 32"] = throughput(
        lambda b: head.train_on_batch(feats[:b], labels(b)), 8 * n, 32)
    full = M.build("aasist", params, preset="AASIST-L")
    out["AASIST-L, every layer fine-tuned, batch 8"] = throughput(
        lambda b: full.train_on_batch(wave(b), labels(b)), n // 2, 8)
    try:
        whisper = M.build("whisper", params, preset="random:tiny")
    except (M.WeightsUnavailable, ImportError) as e:
        print(f"skipping Whisper: {e}", file=sys.stderr)
    else:
        enc = M.feature_extractor(whisper)
        out["Whisper tiny encoder pass (cached once per view), batch 32"] = throughput(
            lambda b: enc.predict_on_batch(wave(b)), n, 32)
        M.unfreeze_top_blocks(whisper, 2)
        M.compile_model(whisper, 1e-5)
        out["Whisper tiny, top 2 layers fine-tuned, batch 16"] = throughput(
            lambda b: whisper.train_on_batch(wave(b), labels(b)), n, 16)
    if files:
        aug = augment.augmentation(rawboost=5, channel="codec,dropout,reverb", p=0.5)
        it = iter(range(10 ** 9))
        out["on-the-fly input: read + RawBoost 5 + channel, 1 process"] = throughput(
            lambda b: [augment.augment_example(None, str(files[next(it) % len(files)]),
                                               np.random.default_rng(i), aug, params)
                       for i in range(b)], n, 8)
    return out


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--files", type=int, default=32, help="utterances per measurement")
    ap.add_argument("--skip-models", action="store_true", help="augmentation costs only")
    ap.add_argument("--out", default="runs/bench/augment.json", help="JSON result file")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    ys, files = utterances(args.files)
    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version()},
              "utterances": len(ys), "genuine": bool(files),
              "augmentation_ms_per_utterance": augmentation_costs(ys)}
    if not args.skip_models:
        result["training_utterances_per_s"] = model_throughputs(args.files, files)
    print(f"{len(ys)} utterances of {SAMPLES} samples ({'genuine' if files else 'tones'}), "
          f"{os.cpu_count()} cores")
    for name, ms in result["augmentation_ms_per_utterance"].items():
        print(f"  {ms:8.1f} ms/utt  {name}")
    for name, ups in result.get("training_utterances_per_s", {}).items():
        print(f"  {ups:8.1f} utt/s   {name}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
