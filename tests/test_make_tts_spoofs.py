"""scripts/make_tts_spoofs.py: labelled spoofs from the Debian speech synthesizers, at 16 kHz and a
drawn level, the same on every run, resumable, one failure never losing the others. An engine
that is not installed skips its test with the reason (.ci/run installs them all)."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import make_tts_spoofs as T


def test_sentences_are_distinct_and_seeded():
    a = T.sentences(300, seed=0)
    assert len(a) == len(set(a)) == 300
    assert a == T.sentences(300, seed=0)
    assert set(a).isdisjoint(T.sentences(300, seed=1)) or len(
        set(a) & set(T.sentences(300, seed=1))) < 30  # another seed: other sentences
    assert all(s[0].isupper() and s[-1] in ".?" for s in a)


def test_plan_is_deterministic_and_labels_every_utterance_with_its_engine():
    p = T.plan(["espeak-ng", "flite-clustergen"], 4, seed=3)
    assert list(p["engine"]) == ["espeak-ng"] * 4 + ["flite-clustergen"] * 4
    assert p["utt_id"].is_unique and p["text"].is_unique
    assert p.iloc[0]["utt_id"] == "TTS_espeakng_3_0000"
    for e, v in zip(p["engine"], p["voice"]):
        assert v in T.ENGINES[e]["voices"]
    assert p["rate"].between(*T.RATE).all()
    pd.testing.assert_frame_equal(p, T.plan(["espeak-ng", "flite-clustergen"], 4, seed=3))


def test_text_is_one_argument_never_a_shell_line(tmp_path):
    text = 'Hello"; rm -rf / ; echo $(whoami)'
    for engine in ("espeak-ng", "flite-diphone"):
        cmd = T.command(engine, T.ENGINES[engine]["voices"][0], text, 1.0, 50, tmp_path / "a.wav")
        assert text in cmd  # a single argv element, given to the program as is
    cmd = T.command("festival-hts", "cmu_us_slt_arctic_hts", text, 1.0, 50, tmp_path / "b.wav")
    assert (tmp_path / "b.txt").read_text() == text + "\n" and text not in " ".join(cmd)


def test_a_missing_engine_names_its_packages(monkeypatch):
    monkeypatch.setattr(T.shutil, "which", lambda name: None)
    msg = T.engine_problem("festival-hts")
    assert "text2wave" in msg and "apt-get install festival festvox-us-slt-hts" in msg
    with pytest.raises(RuntimeError, match="not installed"):
        T.run(["festival-hts"], 1, "unused")
    with pytest.raises(SystemExit, match="unknown \\['wavenet'\\]"):
        T.main(["--engines", "espeak-ng,wavenet", "--out", "x"])


@pytest.mark.parametrize("engine", sorted(T.ENGINES))
def test_each_engine_writes_labelled_16k_speech_and_resumes(engine, tmp_path):
    problem = T.engine_problem(engine)
    if problem:
        pytest.skip(problem)
    summary = T.run([engine], 2, tmp_path, seed=5, workers=1, progress=False)
    assert summary["written"] == 2 and summary["failed"] == 0
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels.columns) == ["file", "label", "attack", "speaker"]
    assert set(labels["label"]) == {"spoof"} and set(labels["attack"]) == {engine}
    assert set(labels["speaker"]) <= set(T.ENGINES[engine]["voices"])
    for name in labels["file"]:
        y, sr = sf.read(tmp_path / "flac" / name)
        assert sr == 16000 and y.ndim == 1 and y.size > 0.5 * sr
        level = 20 * np.log10(np.sqrt(np.mean(y ** 2)))
        assert np.max(np.abs(y)) <= T.PEAK + 1e-4
        assert T.LEVEL_DB[0] - 0.5 <= level <= T.LEVEL_DB[1] + 0.5
        spec = np.abs(np.fft.rfft(y)) ** 2
        f = np.fft.rfftfreq(y.size, 1 / sr)
        assert spec[(f > 100) & (f < 4000)].sum() > 0.5 * spec.sum()  # speech band energy
    info = json.loads((tmp_path / "engines.json").read_text())
    assert info[engine]["kind"] == T.ENGINES[engine]["kind"]
    assert all(v for v in info[engine]["packages"].values())  # installed versions recorded
    again = T.run([engine], 2, tmp_path, seed=5, workers=1, progress=False)
    assert again["kept"] == 2 and again["written"] == 0


def test_one_failed_synthesis_is_listed_and_the_others_are_written(tmp_path, monkeypatch):
    if T.engine_problem("espeak-ng"):
        pytest.skip(T.engine_problem("espeak-ng"))
    real = T.synthesize

    def flaky(engine, voice, text, *args, **kwargs):
        if text == T.plan(["espeak-ng"], 3, 0).iloc[1]["text"]:
            raise RuntimeError("espeak-ng (x) failed: boom, twice")
        return real(engine, voice, text, *args, **kwargs)

    monkeypatch.setattr(T, "synthesize", flaky)
    summary = T.run(["espeak-ng"], 3, tmp_path, workers=2, progress=False)
    assert (summary["written"], summary["failed"]) == (2, 1)
    errors = pd.read_csv(tmp_path / "errors.csv")
    assert list(errors["utt_id"]) == ["TTS_espeakng_0_0001"]
    assert "boom; twice" in errors["error"][0]
    assert len(pd.read_csv(tmp_path / "labels.csv")) == 2


def test_repeated_engines_and_bad_numbers_get_one_line(tmp_path, capsys):
    """Issue 32, items 11 and 13: a repeated engine listed each file twice with two texts per
    id; --seed -1 and --out FILE gave tracebacks."""
    import make_tts_spoofs

    with pytest.raises(SystemExit, match="--engines names espeak-ng more than once"):
        make_tts_spoofs.main(["--engines", "espeak-ng,espeak-ng", "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="more than once"):
        make_tts_spoofs.plan(["espeak-ng", "espeak-ng"], 2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        make_tts_spoofs.main(["--engines", "espeak-ng", "--out", str(tmp_path / "file")])
    for bad in (["--seed", "-1"], ["--per-engine", "0"], ["--workers", "nan"]):
        with pytest.raises(SystemExit) as e:
            make_tts_spoofs.main(["--out", str(tmp_path / "o"), *bad])
        assert e.value.code == 2 and bad[0] in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_piper_reads_its_text_from_stdin_with_drawn_noise_scales(tmp_path, monkeypatch):
    """Issue 33: the neural engine (Piper, VITS) is a program fed on standard input, never
    imported (GPL); its length scale follows the drawn rate and its noise scales are drawn per
    utterance within PIPER_NOISE and PIPER_NOISE_W."""
    calls = []

    def fake_run(cmd, capture_output, timeout, text, input=None):
        calls.append((cmd, input))
        raise OSError("stop here")

    monkeypatch.setattr(T, "piper_voice", lambda package, voice: tmp_path / f"{voice}.onnx")
    monkeypatch.setattr(T.subprocess, "run", fake_run)
    for seed in range(5):
        with pytest.raises(OSError):
            T.synthesize("piper", "en_US-joe-medium", 'Hi"; rm -rf /', 1.25, 50,
                         np.random.default_rng(seed))
    for cmd, stdin in calls:
        assert cmd[:3] == ["piper", "-m", str(tmp_path / "en_US-joe-medium.onnx")]
        assert stdin == 'Hi"; rm -rf /' and stdin not in cmd
        opts = dict(zip(cmd[5::2], map(float, cmd[6::2])))
        assert opts["--length-scale"] == 0.8
        assert T.PIPER_NOISE[0] <= opts["--noise-scale"] <= T.PIPER_NOISE[1]
        assert T.PIPER_NOISE_W[0] <= opts["--noise-w-scale"] <= T.PIPER_NOISE_W[1]
    assert len({c[0][8] for c in calls}) == 5  # another draw each time
    assert "import piper" not in open(T.__file__).read()


def test_kokoro_reads_japanese_sentences_in_its_own_process(tmp_path, monkeypatch):
    """Issue 33: the second neural engine (Kokoro-82M, Japanese voices) is planned with Japanese
    sentences (distinct, seeded) and run by a separate Python process that gets the text, the
    file, the voice and the drawn speed as four arguments (no shell)."""
    ja = T.sentences_ja(200, seed=2)
    assert len(set(ja)) == 200 and ja == T.sentences_ja(200, seed=2)
    assert all(s[-1] in "。？" and not any(c.isascii() and c.isalpha() for c in s) for s in ja)
    p = T.plan(["piper", "kokoro"], 3, seed=2)
    assert all(t.isascii() for t in p[p["engine"] == "piper"]["text"])
    assert list(p[p["engine"] == "kokoro"]["text"]) == ja[3:6]
    calls = []

    def fake_run(cmd, capture_output, timeout, text, input=None):
        calls.append((cmd, input, timeout))
        raise OSError("stop here")

    monkeypatch.setattr(T.subprocess, "run", fake_run)
    with pytest.raises(OSError):
        T.synthesize("kokoro", "jm_kumo", '今日は"; rm -rf /', 1.25, 50,
                     np.random.default_rng(0))
    (cmd, stdin, timeout), = calls
    assert cmd[0] == T.sys.executable and cmd[1] == "-c" and cmd[2] == T.KOKORO_RUN
    assert cmd[3] == '今日は"; rm -rf /' and cmd[5:] == ["jm_kumo", "1.250"]
    assert stdin is None and timeout == T.TIMEOUT_S
