"""scripts/long_audio.py: the rule that joins a long recording's windows into one verdict,
measured as false alarms per hour of genuine speech and spoofed stretches found (issue 34)."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import long_audio as LA
from conftest import tone, write_wav


def test_each_rule_decides_as_documented():
    p = [0.1, 0.6, 0.1, 0.6, 0.6, 0.1, np.nan]  # one lone window, then two in a row
    assert LA.decide(p, 0.5, "max") and not LA.decide(p, 0.5, "mean")
    assert LA.decide(p, 0.5, "run:2") and not LA.decide(p, 0.5, "run:3")
    assert LA.decide([0.7, 0.7, 0.7], 0.5, "run:3") and LA.decide([0.9, 0.4], 0.6, "mean")


def test_long_files_hold_the_spoofed_stretch_and_the_results_count_per_hour(tmp_path):
    """The spliced recording is the genuine one with STRETCH_S of spoofed audio inside (same
    length); results count flagged genuine files against their hours."""
    rng = np.random.default_rng(0)
    genuine, spoof = [], []
    for i in range(12):
        write_wav(tmp_path / f"g{i}.wav", tone(2.0, freq=200 + 10 * i, seed=i))
        genuine.append(str(tmp_path / f"g{i}.wav"))
    for i in range(6):
        write_wav(tmp_path / f"s{i}.wav", 0.5 * rng.standard_normal(32000).astype(np.float32))
        spoof.append(str(tmp_path / f"s{i}.wav"))
    files = LA.make_files(genuine, spoof, [20], 2, tmp_path / "audio", seed=1)
    assert list(files["kind"]) == ["genuine", "spliced"] * 2
    assert np.allclose(files["length_s"], 20.0)
    g, _ = sf.read(files["file"][0])
    s, _ = sf.read(files["file"][1])
    start = int(files["stretch_start_s"][1] * 16000)
    assert np.allclose(s[:start], g[:start], atol=1e-4)  # genuine up to the stretch
    n = int(LA.STRETCH_S * 16000)  # then the stretch, then the rest of the genuine audio
    assert np.allclose(s[start + n:], g[start:len(g) - n], atol=1e-4)
    assert not np.allclose(s[start:start + n], g[start:start + n], atol=1e-2)
    # made-up window scores: genuine files all low but one window, spliced ones with a run
    windows = []
    for f, kind in zip(files["file"], files["kind"]):
        p = [0.1] * 9 + ([0.9] if kind == "genuine" else [0.9, 0.9, 0.9])
        windows += [{"run": "r", "file": f, "window": j, "start_s": 2 * j, "p_spoof": v}
                    for j, v in enumerate(p)]
    results = LA.evaluate(files, pd.DataFrame(windows), {"r": 0.5})
    by = results.set_index("rule")
    assert by.loc["max", "flagged"] == 2 and by.loc["max", "detected"] == 2
    assert by.loc["run:2", "flagged"] == 0 and by.loc["run:2", "detected"] == 2
    assert by.loc["mean", "flagged"] == 0 and by.loc["mean", "detected"] == 0
    assert by.loc["max", "genuine_hours"] == pytest.approx(40 / 3600)
    summary = LA.summarize(results)
    assert "| r | max | 180.0 | 2/2 | 2/2 |" in summary  # 2 flagged in 40 s of genuine speech


def test_short_sets_are_scored_per_rule_and_windows_are_reused_only_when_they_cover(
        tmp_path, monkeypatch):
    """--short: each rule's EER, genuine accepted and spoofs detected on recordings as they
    are; --reuse takes a run's windows from an earlier windows.csv only when it holds every
    file, and scores them all again otherwise."""
    (tmp_path / "labels.csv").write_text("file,label\na.wav,bonafide\nb.wav,bonafide\n"
                                         "c.wav,spoof\nd.wav,spoof\n")
    files = LA.short_files([str(tmp_path / "labels.csv")])
    assert list(files["label"]) == ["bonafide", "bonafide", "spoof", "spoof"]
    assert set(files["set"]) == {"labels.csv"} and set(files["kind"]) == {"short"}
    # a: one low window; b: a lone high window among low ones (max flags it, run:2 does not);
    # c: two high windows; d: one high window (a one-window file: every rule flags it)
    p = {"a": [0.1], "b": [0.1, 0.8, 0.1], "c": [0.9, 0.7], "d": [0.6]}
    windows = pd.DataFrame([{"run": "r", "file": str(tmp_path / f"{k}.wav"), "window": j,
                             "start_s": 2 * j, "p_spoof": v}
                            for k, vs in p.items() for j, v in enumerate(vs)])
    table = LA.evaluate_short(files, windows, {"r": 0.5}).set_index("rule")
    assert table.loc["max", "accepted"] == 0.5 and table.loc["max", "detected"] == 1.0
    assert table.loc["run:2", "accepted"] == 1.0 and table.loc["run:2", "detected"] == 1.0
    assert table.loc["run:2", "eer"] == 0.0  # b's lone window outranks d under max:
    assert table.loc["max", "eer"] == 0.5
    assert table.loc["mean", "accepted"] == 1.0 and table.loc["mean", "files"] == 4
    assert "| r | run:2 | labels.csv | 4 | 0.0% | 100.0% | 100.0% |" in LA.summarize_short(
        table.reset_index())
    from deepfake_detector import inference

    scored = []

    class Stub:
        def __init__(self, run):
            self.threshold = 0.25

    monkeypatch.setattr(inference, "Detector", Stub)
    monkeypatch.setattr(inference, "score_files", lambda paths, *a, **k: scored.append(
        paths) or [{"status": "ok", "file": f, "windows": [{"start_s": 0, "p_spoof": 0.3}]}
                   for f in paths])
    again, threshold = LA.score(files, "r", reuse=windows)  # every file: taken as it is
    assert threshold == 0.25 and scored == [] and again.equals(windows)
    partial = windows[windows["file"] != str(tmp_path / "d.wav")]
    again, _ = LA.score(files, "r", reuse=partial)  # one file missing: all scored again
    assert scored == [list(files["file"])] and list(again["p_spoof"]) == [0.3] * 4
