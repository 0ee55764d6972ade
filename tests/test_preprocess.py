"""preprocess.py: bad input, resume, atomic writes, workers, real corpora."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_detector import atomic
from deepfake_detector import features
import preprocess
from deepfake_detector import protocols
from conftest import MINI_LA, SHARED, needs_mini, tone, write_wav
from test_protocols import LINES_2019, write


# ----------------------------------------------------------------------------- the run

@pytest.fixture
def messy_corpus(tmp_path):
    """Protocol + audio with good, silent, empty, corrupt, truncated and missing files."""
    audio = tmp_path / "flac"
    audio.mkdir()
    lines = []
    for i in range(4):
        write_wav(audio / f"U_{i}.flac", tone(1.0 + i, seed=i, freq=150 + 40 * i))
        lines.append(f"SPK U_{i} - {'-' if i % 2 == 0 else 'A01'} "
                     f"{'bonafide' if i % 2 == 0 else 'spoof'}")
    write_wav(audio / "U_silent.flac", np.zeros(16000))
    (audio / "U_empty.flac").write_bytes(b"")
    (audio / "U_random.flac").write_bytes(np.random.default_rng(0).bytes(4000))
    good = (audio / "U_0.flac").read_bytes()
    (audio / "U_trunc.flac").write_bytes(good[: len(good) // 2])
    for name in ("silent", "empty", "random", "trunc", "missing"):
        lines.append(f"SPK U_{name} - A02 spoof")
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol, audio


def test_bad_files_are_recorded_never_fatal(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    out = tmp_path / "out"
    s = preprocess.preprocess(protocol, audio, out, split="train", workers=1, progress=False)
    assert (s["listed"], s["written"], s["failed"], s["missing"]) == (9, 4, 4, 1)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert list(manifest["utt_id"]) == ["U_0", "U_1", "U_2", "U_3"]
    assert list(manifest["label"]) == ["bonafide", "spoof", "bonafide", "spoof"]
    assert list(manifest["target"]) == [0, 1, 0, 1]
    assert list(manifest["attack"]) == ["-", "A01", "-", "A01"]
    assert set(manifest["split"]) == {"train"}
    assert list(manifest["audio"]) == [str((audio / f"U_{i}.flac").resolve()) for i in range(4)]
    for p in manifest["path"]:
        a = np.load(out / p)
        assert a.shape == (128, 128) and np.isfinite(a).all() and 0 <= a.min() <= a.max() <= 1
    errors = pd.read_csv(out / "errors.csv").set_index("utt_id")["reason"]
    assert "silent" in errors["U_silent"]
    assert "cannot decode" in errors["U_empty"]
    assert "cannot decode" in errors["U_random"]
    assert "cannot decode" in errors["U_trunc"] and "lost sync" in errors["U_trunc"]
    assert (out / "missing.txt").read_text().strip().endswith("U_missing.flac")
    assert not list(out.glob("U_silent*")) and not list(out.glob("*.tmp"))
    assert json.loads((out / "features.json").read_text()) == features.feature_params()


def test_strict_stops_on_missing_audio_naming_the_file(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    with pytest.raises(FileNotFoundError, match="U_missing.flac"):
        preprocess.preprocess(protocol, audio, tmp_path / "o", workers=1, strict=True,
                              progress=False)


def test_rerun_resumes_and_overwrite_redoes(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    out = tmp_path / "out"
    preprocess.preprocess(protocol, audio, out, workers=1, progress=False)
    (out / "U_2.npy").unlink()  # as if the run had stopped before this file
    kept = {p: os.stat(out / f"{p}.npy").st_mtime_ns for p in ("U_0", "U_1", "U_3")}
    s = preprocess.preprocess(protocol, audio, out, workers=1, progress=False)
    assert (s["written"], s["kept"], s["in_manifest"]) == (1, 3, 4)
    assert (out / "U_2.npy").exists()
    assert {p: os.stat(out / f"{p}.npy").st_mtime_ns for p in kept} == kept
    s = preprocess.preprocess(protocol, audio, out, workers=1, overwrite=True, progress=False)
    assert (s["written"], s["kept"]) == (4, 0)


def test_waveform_arrays_resume_and_refuse_mel_folders(messy_corpus, tmp_path):
    """--features waveform: int16 windows of the decoded audio, their own features.json, the
    same bad-file handling and resume; a mel folder is never topped up with waveforms."""
    protocol, audio = messy_corpus
    out = tmp_path / "wave"
    s = preprocess.main(["--protocol", str(protocol), "--audio-dir", str(audio), "--out",
                         str(out), "--features", "waveform", "--workers", "1"])
    assert (s["in_manifest"], s["failed"], s["missing"]) == (4, 4, 1)
    params = json.loads((out / "features.json").read_text())
    assert params == features.feature_params(kind="waveform")
    w = np.load(out / "U_1.npy")
    y = features.load_audio(audio / "U_1.flac")  # 2 s: repeat-padded to the window
    assert w.dtype == np.int16 and w.shape == (64524,)
    np.testing.assert_array_equal(w[:y.size], np.round(y * 32768).astype(np.int16))
    (out / "U_2.npy").write_bytes((out / "U_2.npy").read_bytes()[:1000])  # cut short
    s = preprocess.preprocess(protocol, audio, out, workers=1, progress=False, kind="waveform")
    assert (s["written"], s["kept"]) == (1, 3)
    mel = tmp_path / "mel"
    preprocess.preprocess(protocol, audio, mel, workers=1, progress=False)
    with pytest.raises(features.FeatureMismatch, match="differ in: .*kind"):
        preprocess.preprocess(protocol, audio, mel, workers=1, progress=False, kind="waveform")
    with pytest.raises(SystemExit, match="--fit resize applies to mel arrays only"):
        preprocess.main(["--protocol", str(protocol), "--audio-dir", str(audio), "--out",
                         str(tmp_path / "x"), "--features", "waveform", "--fit", "resize"])


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def explode(f, arr, allow_pickle):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.np, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        atomic.save_npy_atomic(tmp_path / "x.npy", np.zeros((2, 2)))
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_replaces_the_target_whole_and_readable(tmp_path):
    target = tmp_path / "x.npy"
    target.write_bytes(b"old")
    atomic.save_npy_atomic(target, np.arange(6, dtype=np.float32).reshape(2, 3), fsync=False)
    np.testing.assert_array_equal(np.load(target), np.arange(6).reshape(2, 3))
    assert target.stat().st_mode & 0o777 == 0o644  # mkstemp's 0o600 widened, as before
    atomic.write_text_atomic(tmp_path / "t.txt", "naïve\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "naïve\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "x.npy"]  # no temporary left
    with pytest.raises(ValueError), atomic.atomic_file(target, "w") as f:
        f.write("half")
        raise ValueError("writer failed")
    np.testing.assert_array_equal(np.load(target), np.arange(6).reshape(2, 3))  # old one kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "x.npy"]


def test_refuses_to_mix_feature_parameters(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    out = tmp_path / "out"
    preprocess.preprocess(protocol, audio, out, workers=1, progress=False)
    with pytest.raises(features.FeatureMismatch, match="differ in: .*fit"):
        preprocess.preprocess(protocol, audio, out, workers=1, fit="resize", progress=False)


def test_workers_give_identical_arrays(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    s1 = preprocess.preprocess(protocol, audio, tmp_path / "w1", workers=1, progress=False)
    s2 = preprocess.preprocess(protocol, audio, tmp_path / "w2", workers=2, progress=False)
    assert (s1["written"], s1["failed"]) == (s2["written"], s2["failed"]) == (4, 4)
    for i in range(4):
        np.testing.assert_array_equal(np.load(tmp_path / "w1" / f"U_{i}.npy"),
                                      np.load(tmp_path / "w2" / f"U_{i}.npy"))


def test_workers_fork_unless_tensorflow_is_loaded(messy_corpus, tmp_path, monkeypatch):
    """Workers fork from a process without TensorFlow (no interpreter to start again: checked
    in a fresh process, which then writes the same arrays as one worker) and come from a clean
    forkserver when it is loaded (its threads make fork unsafe)."""
    import subprocess
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", object()))
    assert preprocess.pool_context().get_start_method() == "forkserver"
    protocol, audio = messy_corpus
    code = ("import sys, preprocess\n"
            "assert 'tensorflow' not in sys.modules\n"
            "print(preprocess.pool_context().get_start_method())\n"
            f"s = preprocess.preprocess({str(protocol)!r}, {str(audio)!r}, "
            f"{str(tmp_path / 'w2')!r}, workers=2, progress=False)\n"
            "print(s['written'], s['failed'])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(Path(preprocess.__file__).parent),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["fork", "4", "4"]
    preprocess.preprocess(protocol, audio, tmp_path / "w1", workers=1, progress=False)
    for i in range(4):
        np.testing.assert_array_equal(np.load(tmp_path / "w1" / f"U_{i}.npy"),
                                      np.load(tmp_path / "w2" / f"U_{i}.npy"))


def test_csv_protocol_with_relative_and_absolute_paths(tmp_path):
    (tmp_path / "audio" / "sub").mkdir(parents=True)
    write_wav(tmp_path / "audio" / "sub" / "a.wav", tone(1.0), 22050)
    write_wav(tmp_path / "elsewhere.wav", tone(1.0, seed=3), 44100)
    csv = tmp_path / "labels.csv"
    csv.write_text(f"file,label\nsub/a.wav,bona-fide\n{tmp_path / 'elsewhere.wav'},spoof\n")
    s = preprocess.preprocess(csv, tmp_path / "audio", tmp_path / "out", workers=1,
                              progress=False)
    assert (s["written"], s["failed"], s["missing"]) == (2, 0, 0)
    m = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert list(m["utt_id"]) == ["a", "elsewhere"] and list(m["target"]) == [0, 1]


def test_a_2021_protocol_s_conditions_reach_the_manifest_and_the_score_table(tmp_path):
    """Issue 22: per-condition tables in model mode need the protocol's codec and channel in
    the manifest; the score table a run's report is made from carries them on."""
    from deepfake_detector.evaluation import breakdown

    (tmp_path / "audio").mkdir()
    for i in range(2):
        write_wav(tmp_path / "audio" / f"LA_E_{i}.flac", tone(1.0, seed=i))
    proto = write(tmp_path, "keys.txt", "LA_0009 LA_E_0 alaw ita_tx A07 spoof notrim eval\n"
                                        "LA_0009 LA_E_1 none - bonafide bonafide notrim eval\n")
    preprocess.preprocess(proto, tmp_path / "audio", tmp_path / "out", workers=1,
                          progress=False)
    m = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert list(m["codec"]) == ["alaw", "none"] and list(m["transmission"]) == ["ita_tx", "-"]
    table = breakdown.score_table(m, [1.0, -1.0])
    assert list(table["codec"]) == ["alaw", "none"]


def test_main_with_protocol_and_missing_audio_dir(tmp_path, capsys):
    with pytest.raises(SystemExit, match="does not exist"):
        preprocess.main(["--protocol", str(write(tmp_path, "p.txt", LINES_2019)),
                         "--audio-dir", str(tmp_path / "nope")])


@needs_mini
@pytest.mark.slow
def test_genuine_mini_corpus_all_202_files(tmp_path):
    n = 0
    for split in ("train", "dev"):
        out = tmp_path / split
        s = preprocess.main(["--dataset-root", str(MINI_LA), "--split", split, "--out", str(out),
                             "--workers", "2"])
        assert s["failed"] == 0 and s["missing"] == 0
        protocol = protocols.parse_protocol(
            MINI_LA / "ASVspoof2019_LA_cm_protocols"
            / f"ASVspoof2019.LA.cm.{split}.{'trn' if split == 'train' else 'trl'}.txt")
        manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
        merged = protocol.merge(manifest, on="utt_id", suffixes=("_p", "_m"))
        assert len(merged) == len(protocol) == len(manifest)
        assert (merged["label_p"] == merged["label_m"]).all()
        assert (merged["attack_p"] == merged["attack_m"]).all()
        assert (merged["speaker_p"] == merged["speaker_m"]).all()
        for p in manifest["path"]:
            a = np.load(out / p)
            assert a.shape == (128, 128) and a.dtype == np.float32
            assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
        n += len(manifest)
    assert n == 202


@pytest.mark.skipif(not (SHARED / "wavefake_ljspeech").is_dir(), reason="shared WaveFake not found")
def test_genuine_wavefake_csv_at_22k(tmp_path):
    root = SHARED / "wavefake_ljspeech"
    s = preprocess.main(["--protocol", str(root / "labels.csv"), "--audio-dir", str(root),
                         "--out", str(tmp_path / "wf"), "--workers", "2"])
    labels = pd.read_csv(root / "labels.csv")
    assert s["failed"] == 0 and s["missing"] == 0 and s["in_manifest"] == len(labels) == 117
    manifest = pd.read_csv(tmp_path / "wf" / "manifest.csv", keep_default_na=False)
    expected = {Path(f).stem: lab for f, lab in zip(labels["file"], labels["label"])}
    assert dict(zip(manifest["utt_id"], manifest["label"])) == expected
    assert set(manifest.loc[manifest["utt_id"].str.endswith("_gen"), "label"]) == {"spoof"}


def test_demo_corpus_spoof_fraction():
    import make_demo_corpus

    assert [make_demo_corpus.is_spoof(i) for i in range(4)] == [False, True, False, True]
    share = np.mean([make_demo_corpus.is_spoof(i, 0.9) for i in range(400)])
    assert share == 0.9


# ----------------------------------------------------------------------------- hostile input


def test_one_hostile_file_among_good_ones_keeps_the_others(tmp_path):
    import soundfile as sf

    audio = tmp_path / "audio"
    audio.mkdir()
    lines = []
    for i in range(3):
        write_wav(audio / f"G{i}.flac", tone(1.5, seed=i))
        lines.append(f"SPK G{i} - - bonafide")
    sf.write(audio / "HUGE.flac", np.zeros(60_000, np.float32), 1000)  # fine: 60 s at 1 kHz
    sf.write(audio / "ONEHZ.wav", np.zeros(60_000, np.float32), 1)  # 16 h once resampled
    lines += ["SPK HUGE - A01 spoof", "SPK ONEHZ - A01 spoof"]
    (tmp_path / "p.txt").write_text("\n".join(lines) + "\n")
    s = preprocess.preprocess(tmp_path / "p.txt", audio, tmp_path / "out", workers=2,
                              progress=False, max_seconds=30)
    assert (s["written"], s["failed"]) == (3, 2)
    errors = pd.read_csv(tmp_path / "out" / "errors.csv").set_index("utt_id")["reason"]
    assert errors["ONEHZ"].startswith("too long") and errors["HUGE"].startswith("too long")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert sorted(manifest["utt_id"]) == ["G0", "G1", "G2"]


@pytest.mark.parametrize("utt", ["../../pwned", "/tmp/abs", "a/b", "..", ".hidden"])
def test_ids_that_would_leave_the_output_folder_are_refused(tmp_path, utt):
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "ok.flac", tone(1.0))
    (tmp_path / "p.txt").write_text(f"SPK ok - - bonafide\nS {utt} - A01 spoof\n")
    out = tmp_path / "work" / "out"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(SystemExit, match=r"p.txt:2: utterance id .* cannot name a file"):
        preprocess.main(["--protocol", str(tmp_path / "p.txt"), "--audio-dir",
                         str(tmp_path / "audio"), "--out", str(out)])
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere, inside or out


def test_protocol_encodings_and_limits(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "U1.flac", tone(1.0))
    text = "LA_0079 U1 - - bonafide\n"
    (tmp_path / "bom.txt").write_text("\ufeff" + text, encoding="utf-8")
    df = protocols.parse_protocol(tmp_path / "bom.txt")
    assert df["speaker"].iloc[0] == "LA_0079"  # the byte-order mark does not stick to it
    (tmp_path / "u16.txt").write_text(text, encoding="utf-16")
    with pytest.raises(protocols.ProtocolError, match=r"u16.txt:\d+: not UTF-8 text"):
        protocols.parse_protocol(tmp_path / "u16.txt")
    (tmp_path / "latin.csv").write_bytes("file,label\ncaf\xe9.wav,bonafide\n".encode("latin-1"))
    with pytest.raises(protocols.ProtocolError, match=r"latin.csv:2: not UTF-8 text"):
        protocols.parse_protocol(tmp_path / "latin.csv")
    for bad in ("0", "-118"):
        with pytest.raises(SystemExit):
            preprocess.main(["--protocol", str(tmp_path / "bom.txt"), "--audio-dir",
                             str(tmp_path / "audio"), "--limit", bad])
        assert "--limit must be at least 1" in capsys.readouterr().err


def test_resume_recomputes_cut_arrays_and_removes_orphans(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    out = tmp_path / "out"
    preprocess.preprocess(protocol, audio, out, workers=1, progress=False)
    (out / "U_0.npy").write_bytes(b"")  # a crash mid-write, or a full disk
    good = (out / "U_1.npy").read_bytes()
    (out / "U_1.npy").write_bytes(good[: len(good) // 2])
    orphan = out / ".U_2.npy.tmp-abc123.tmp"  # left by a killed run
    orphan.write_bytes(b"partial")
    s = preprocess.preprocess(protocol, audio, out, workers=1, progress=False)
    assert (s["written"], s["kept"]) == (2, 2) and not orphan.exists()
    for u in ("U_0", "U_1"):
        assert np.load(out / f"{u}.npy").shape == (128, 128)


# ----------------------------------------------------------------------------- hostile round 2

def test_every_listed_file_missing_is_one_clear_error(tmp_path):
    """A wrong --audio-dir used to crash with a pandas TypeError (StringArray & bool)."""
    (tmp_path / "audio").mkdir()
    (tmp_path / "p.txt").write_text("SPK A1 - - bonafide\nSPK A2 - A01 spoof\n")
    with pytest.raises(SystemExit, match=r"none of the 2 audio files .* check --audio-dir"):
        preprocess.main(["--protocol", str(tmp_path / "p.txt"), "--audio-dir",
                         str(tmp_path / "audio"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("n_bytes", [201, 251, 300])
def test_an_utterance_id_too_long_for_a_file_name_is_refused_with_its_line(tmp_path, n_bytes):
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "ok.flac", tone(1.0))
    (tmp_path / "p.txt").write_text(f"SPK ok - - bonafide\nS {'x' * n_bytes} - A01 spoof\n")
    with pytest.raises(SystemExit, match=rf"p.txt:2: utterance id .* is {n_bytes} bytes long"):
        preprocess.main(["--protocol", str(tmp_path / "p.txt"), "--audio-dir",
                         str(tmp_path / "audio"), "--out", str(tmp_path / "out")])


def test_an_id_of_the_longest_allowed_length_is_written(tmp_path):
    utt = "u" * protocols.MAX_ID_BYTES
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / f"{utt}.flac", tone(1.0))
    (tmp_path / "p.txt").write_text(f"SPK {utt} - - bonafide\n")
    s = preprocess.preprocess(tmp_path / "p.txt", tmp_path / "audio", tmp_path / "out",
                              workers=1, progress=False)
    assert s["written"] == 1 and (tmp_path / "out" / f"{utt}.npy").is_file()


def test_a_full_disk_fails_the_step_and_keeps_what_was_written(messy_corpus, tmp_path,
                                                               monkeypatch):
    """ENOSPC while writing arrays used to be recorded as per-file failures with exit 0."""
    import errno

    real = preprocess.save_npy_atomic
    calls = []

    def full_after_two(path, x, **kw):
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, x, **kw)

    monkeypatch.setattr(preprocess, "save_npy_atomic", full_after_two)
    protocol, audio = messy_corpus
    with pytest.raises(SystemExit, match=r"2 of 8 arrays could not be written .*No space left"
                                         r".* is incomplete"):
        preprocess.main(["--protocol", str(protocol), "--audio-dir", str(audio), "--out",
                         str(tmp_path / "out"), "--workers", "1"])
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert len(manifest) == 2  # what was written is listed, the rest is not
    monkeypatch.setattr(preprocess, "save_npy_atomic", real)
    s = preprocess.preprocess(protocol, audio, tmp_path / "out", workers=1, progress=False)
    assert (s["kept"], s["written"]) == (2, 2)  # the rerun finishes the job


def test_loud_float_audio_is_written_finite(tmp_path):
    import soundfile as sf

    (tmp_path / "audio").mkdir()
    sf.write(str(tmp_path / "audio" / "L.wav"),
             np.random.default_rng(0).uniform(-1, 1, 32000).astype("f4") * 1e20, 16000,
             subtype="FLOAT")
    pd.DataFrame({"file": ["L.wav"], "label": ["spoof"]}).to_csv(tmp_path / "l.csv",
                                                                 index=False)
    s = preprocess.preprocess(tmp_path / "l.csv", tmp_path / "audio", tmp_path / "out",
                              workers=1, progress=False)
    assert s["written"] == 1
    assert np.isfinite(np.load(tmp_path / "out" / "L.npy")).all()
