"""Shared fixtures: a tiny generated demo corpus, its features, and one trained run.

Real public audio in ``../shared/data`` (beside the checkout) is used when present; tests that
need it skip with a reason otherwise. ``DEEPFAKE_SHARED_DATA`` overrides its location.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

SHARED = Path(os.environ.get("DEEPFAKE_SHARED_DATA", REPO.parent / "shared" / "data"))
MINI_LA = SHARED / "asvspoof2019_la_mini" / "LA"
FULL_PROTOCOLS = SHARED / "asvspoof2019_la_protocols_full"

needs_mini = pytest.mark.skipif(not MINI_LA.is_dir(),
                                reason=f"shared mini ASVspoof corpus not found at {MINI_LA}")
needs_full_protocols = pytest.mark.skipif(
    not FULL_PROTOCOLS.is_dir(), reason=f"official protocol files not found at {FULL_PROTOCOLS}")
# fixtures that generate audio, train or serve: a test using any of them is marked slow, so
# `pytest -m "not slow"` runs the quick checks in under a minute (README's command runs all)
SLOW_FIXTURES = {"demo_corpus", "demo_features", "trained_run", "informative_weights", "server",
                 "detector", "demo_waveforms", "whisper_run", "demo_waveforms_aasist"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def write_wav(path, y, sr=16000, subtype="PCM_16"):
    import soundfile as sf

    sf.write(str(path), np.asarray(y, dtype=np.float32), sr, subtype=subtype)
    return Path(path)


def tone(seconds=1.0, sr=16000, freq=220.0, amp=0.3, seed=0):
    """A harmonic tone with a little noise: a stand-in for speech in unit tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(amp / k * np.sin(2 * np.pi * k * freq * t) for k in range(1, 6))
    return (y + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """A tiny deterministic demo corpus: 24 train, 12 dev utterances (half spoof)."""
    import make_demo_corpus

    out = tmp_path_factory.mktemp("demo")
    make_demo_corpus.make_corpus(out, {"train": 24, "dev": 12, "eval": 0}, seed=0,
                                 min_dur=1.5, max_dur=3.0)
    return out / "LA"


def preprocess_demo(demo_corpus, root, kind, clip_samples=None):
    """preprocess.py output of ``kind`` (and waveform window ``clip_samples``) for the demo train
    and dev splits under ``root``."""
    import preprocess
    from deepfake_detector import protocols

    out = {}
    for split in ("train", "dev"):
        protocol, audio = protocols.resolve_2019_layout(demo_corpus, split)
        preprocess.preprocess(protocol, audio, root / split, split=split, workers=1,
                              progress=False, kind=kind, clip_samples=clip_samples)
        out[split] = root / split
    return out


@pytest.fixture(scope="session")
def demo_features(demo_corpus, tmp_path_factory):
    """preprocess.py output for the demo train and dev splits."""
    return preprocess_demo(demo_corpus, tmp_path_factory.mktemp("features"), "mel")


@pytest.fixture(scope="session")
def demo_waveforms(demo_corpus, tmp_path_factory):
    """preprocess.py --features waveform output for the demo train and dev splits."""
    return preprocess_demo(demo_corpus, tmp_path_factory.mktemp("waveforms"), "waveform")


@pytest.fixture(scope="session")
def demo_waveforms_aasist(demo_corpus, tmp_path_factory):
    """preprocess.py --features waveform --clip-samples 64600 output (--model aasist)."""
    return preprocess_demo(demo_corpus, tmp_path_factory.mktemp("waveforms64600"), "waveform",
                           64_600)


@pytest.fixture(scope="session")
def whisper_run(demo_waveforms, tmp_path_factory):
    """A 2-epoch --model whisper run with the untrained mini encoder (random:mini)."""
    pytest.importorskip("keras_hub", reason="--model whisper needs requirements-whisper.txt")
    import train

    run = tmp_path_factory.mktemp("runs") / "whisper"
    train.main(["--data", str(demo_waveforms["train"]), "--run", str(run), "--model", "whisper",
                "--preset", "random:mini", "--epochs", "2", "--batch-size", "8", "--quiet"])
    return run


@pytest.fixture(scope="session")
def trained_run(demo_features, tmp_path_factory):
    """A 2-epoch run (random-init backbone) on the demo train split, 80/20."""
    import train

    run = tmp_path_factory.mktemp("runs") / "demo"
    train.main(["--data", str(demo_features["train"]), "--run", str(run), "--weights", "none",
                "--epochs", "2", "--batch-size", "8", "--quiet"])
    return run


@pytest.fixture(scope="session")
def informative_weights(tmp_path_factory):
    """Random-init EfficientNetB0 weights whose last BatchNorm is scaled up, so that pooled
    features are O(0.1-1) and differ between inputs (with plain random init they are ~1e-6 and
    every training curve is flat at ln 2, which would make the comparisons below vacuous)."""
    import keras

    keras.utils.set_random_seed(0)
    b = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                          input_shape=(128, 128, 3))
    bn = b.get_layer("top_bn")
    bn.gamma.assign(bn.gamma.numpy() * 1e5)
    path = tmp_path_factory.mktemp("weights") / "b0_informative.weights.h5"
    b.save_weights(path)
    return str(path)
