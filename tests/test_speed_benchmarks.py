"""benchmarks/memory.py, fairness.py and aasist_flops.py: the recordings they make and the
arithmetic of their tables (the measurements themselves are benchmarks, run by hand;
docs/speed.md states their commands and results)."""

import importlib.util
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO


def _load(name):
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


memory, fairness, flops = _load("memory"), _load("fairness"), _load("aasist_flops")


def test_recordings_have_the_asked_length_and_a_speech_like_level(tmp_path):
    path = memory.make_recording(tmp_path / "two.wav", 2)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 2 * 60 * 16000)
    y, _ = sf.read(path, frames=16000 * 5)
    assert 0.25 < np.abs(y).max() <= 0.31  # 0.3 of full scale, written as PCM_16
    assert 0.02 < np.sqrt(np.mean(y ** 2)) < 0.2


def test_parts_add_up_to_the_steps_measured():
    p = {"runtime_rss": 900.0, "model_rss": 1000.0, "model_hwm": 1010.0, "audio_rss": 1230.0,
         "audio_hwm": 1460.0, "audio_mb": 230.0, "score_hwm": 2100.0}
    parts = memory.by_part(p)
    assert parts["runtime"] == 900.0 and parts["model"] == 100.0
    assert parts["decoding (peak above the model)"] == 460.0
    assert parts["scoring (peak above model + audio)"] == 870.0
    assert parts["peak"] == 2100.0
    assert memory.by_part({**p, "score_hwm": 1200.0})["peak"] == 1460.0  # decoding's peak


def test_the_memory_table_prints_every_row_and_column():
    text = memory.table({"1 min": {"a": 1234.4, "b": 0.5}, "60 min": {"a": 10.0, "b": 2.25}},
                        ["a", "b"])
    assert text.splitlines() == ["| | a | b |", "|---|---|---|",
                                 "| 1 min | 1,234 | 0.50 |", "| 60 min | 10 | 2.25 |"]


@pytest.mark.parametrize("alone, during, ok", [(0.5, 2.0, True), (0.5, 2.01, False),
                                                (3.0, 7.0, True), (3.0, 7.5, False)])
def test_the_fairness_target_is_twice_alone_plus_a_second(alone, during, ok):
    assert fairness.within_target(alone, during) is ok


def test_the_flops_table_keeps_only_faster_options_within_tolerance():
    base = {"utterances_per_s": 4.0, "gflops": 40.0, "max_logit_change": 0.0, "kept": False}
    r = {"config": "AASIST-L", "batch_size": 8, "flops_per_utterance": 10e9,
         "matmul_gflops": 100.0, "conv_gflops": 80.0,
         "options": {"float32 (default)": base,
                     "oneDNN bf16 math": {"utterances_per_s": 5.0, "gflops": 50.0,
                                          "max_logit_change": 5e-4, "kept": False},
                     "XLA jit_compile": {"error": ["no XLA"]}}}
    lines = flops.report(r).splitlines()
    assert lines[0].startswith("AASIST-L: 10.00 GFLOP per utterance; machine peak (float32): "
                               "matmul 100 GFLOP/s")
    assert lines[4] == "| float32 (default) | 4.00 | 40 | 40% | 50% | 0.0e+00 | - |"
    assert lines[5] == "| oneDNN bf16 math | 5.00 | 50 | 50% | 62% | 5.0e-04 | no |"
    assert lines[6].startswith("| XLA jit_compile | failed")
