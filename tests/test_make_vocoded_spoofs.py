"""scripts/make_vocoded_spoofs.py: every vocoder keeps length and level, output is finite and
deterministic, labels.csv is a protocol preprocess.py reads, runs resume."""

import numpy as np
import pandas as pd
import pytest

from deepfake_detector import features
import make_vocoded_spoofs as V
import preprocess
from deepfake_detector import protocols
from conftest import tone, write_wav


def speechlike(seconds=1.2, seed=0):
    """A voiced, pitch-varying harmonic signal with an envelope, at 16 kHz (WORLD needs a
    periodic source to find an F0)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    y = sum(np.sin(k * phase) / k for k in range(1, 30))
    y *= 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2 * t))
    return (0.2 * y / np.abs(y).max() + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("attack", V.VOCODERS)
def test_every_vocoder_keeps_length_and_level_and_changes_the_signal(attack):
    y = speechlike()
    out = V.vocode(y, attack, V.task_rng(0, "u1", attack))
    assert out.shape == y.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() < V.PEAK
    assert abs(V.rms_db(out) - V.rms_db(y)) <= V.LEVEL_TOL_DB
    assert not np.allclose(out, y, atol=1e-3)  # a copy, not the original
    again = V.vocode(y, attack, V.task_rng(0, "u1", attack))
    np.testing.assert_array_equal(out, again)  # deterministic for a seed


def test_level_check_refuses_what_it_cannot_match():
    with pytest.raises(V.VocoderError, match="NaN or inf"):
        V.match_level(np.array([0.1, np.nan]), np.array([0.1, 0.2]))
    with pytest.raises(V.VocoderError, match="silent"):
        V.match_level(np.zeros(100), np.full(100, 0.1))
    spiky = np.zeros(1000)
    spiky[::100] = 1.0  # the limiter cannot keep this level under the ceiling
    with pytest.raises(V.VocoderError, match="level"):
        V.match_level(spiky, np.full(1000, 0.9))
    y = V.soft_limit(np.array([0.5, 0.9, 2.0, -3.0]))
    assert y[0] == 0.5 and 0.8 < y[1] < 0.9 and y[2] < V.PEAK and y[3] > -V.PEAK


def test_run_writes_a_protocol_preprocess_reads_and_resumes(tmp_path):
    audio = tmp_path / "bona"
    audio.mkdir()
    for i in range(2):
        write_wav(audio / f"B{i}.wav", speechlike(seed=i), 16000)
    (audio / "broken.wav").write_bytes(b"RIFF....not audio")
    sources = V.bonafide_sources(folder=[audio])
    assert list(sources["utt_id"]) == ["B0", "B1", "broken"]
    out = tmp_path / "voc"
    s = V.run(sources, out, ("world", "gl_mel8"), seed=1, workers=1, progress=False)
    assert (s["written"], s["kept"], s["failed"]) == (4, 0, 2)
    errors = pd.read_csv(out / "errors.csv")
    assert set(errors["utt_id"]) == {"broken"} and errors["reason"].str.contains("decode").all()
    labels = protocols.parse_protocol(out / "labels.csv")
    assert sorted(labels["utt_id"]) == ["B0__gl_mel8", "B0__world", "B1__gl_mel8", "B1__world"]
    assert set(labels["label"]) == {"spoof"} and set(labels["attack"]) == {"world", "gl_mel8"}
    for f in labels["file"]:
        src = features.load_audio(audio / f"{f.split('/')[-1].split('__')[0]}.wav")
        assert features.load_audio(out / f).size == src.size
    summary = preprocess.preprocess(out / "labels.csv", out, tmp_path / "feat", workers=1,
                                    progress=False)
    assert summary["in_manifest"] == 4 and summary["failed"] == 0
    stamp = (out / "audio" / "B0__world.flac").stat().st_mtime_ns
    s = V.run(sources, out, ("world", "gl_mel8"), seed=1, workers=1, progress=False)
    assert (s["written"], s["kept"]) == (0, 4)  # the broken file is tried again, nothing else
    assert (out / "audio" / "B0__world.flac").stat().st_mtime_ns == stamp


def test_sources_from_a_protocol_keep_only_bonafide_and_the_speaker(tmp_path):
    for u in ("A", "B"):
        write_wav(tmp_path / f"{u}.flac", speechlike(), 16000)
    proto = tmp_path / "p.txt"
    proto.write_text("SPK1 A - - bonafide\nSPK2 B - A01 spoof\n")
    df = V.bonafide_sources(protocol=proto, audio_dir=tmp_path)
    assert list(df["utt_id"]) == ["A"] and list(df["speaker"]) == ["SPK1"]
    with pytest.raises(ValueError, match="no source"):
        V.bonafide_sources()


def test_main_refuses_unknown_vocoders(capsys, tmp_path):
    with pytest.raises(SystemExit):
        V.main(["--folder", str(tmp_path), "--out", str(tmp_path / "o"), "--vocoders", "wavenet"])
    assert "unknown vocoder(s) ['wavenet']" in capsys.readouterr().err


def test_loud_float_audio_is_vocoded_not_fatal(tmp_path):
    """A float WAV peaking at 1e20 used to kill the run (librosa: audio buffer is not finite)."""
    import soundfile as sf

    src = tmp_path / "loud.wav"
    sf.write(str(src), tone(1.5) * 1e20, 16000, subtype="FLOAT")
    written = []
    for attack in V.VOCODERS:
        utt, _, status, reason = V.make_copy(
            ("loud", str(src), attack, str(tmp_path / f"loud__{attack}.flac"), 0))
        if status != "written":  # the level check may refuse a copy of a pure tone: a row
            assert reason.startswith("vocoded copy fails the checks"), (attack, reason)
            continue
        written.append(attack)
        y, sr = sf.read(str(tmp_path / f"loud__{attack}.flac"))
        assert sr == 16000 and np.isfinite(y).all() and np.abs(y).max() > 0.01
    assert {"world", "gl_mel32"} <= set(written)
