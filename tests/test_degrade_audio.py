"""scripts/degrade_audio.py: the channel-degraded copy (telephone band, noise, MP3) keeps the
length and label of every utterance, removes what lies above 4 kHz, is the same on every run,
and one unreadable file does not stop the others."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import degrade_audio
from conftest import tone, write_wav


def band_energy(y, lo, hi, sr=16000):
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(y.size, 1 / sr)
    return spec[(f >= lo) & (f < hi)].sum() / spec.sum()


def test_each_step_does_what_it_says():
    y = (tone(2.0, freq=180) + 0.05 * np.random.default_rng(1).standard_normal(32000)).astype(
        "float32")
    assert band_energy(y, 4500, 8000) > 1e-3
    tel = degrade_audio.degrade(y, ("telephone",))
    assert tel.shape == y.shape and band_energy(tel, 4500, 8000) < 1e-5
    noisy = degrade_audio.degrade(y, ("noise",), snr_db=10, rng=np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(y.astype(float) ** 2) / np.mean((noisy - y).astype(float) ** 2))
    assert abs(snr - 10) < 0.5
    mp3 = degrade_audio.degrade(y, ("mp3",))
    assert mp3.shape == y.shape and band_energy(mp3, 4500, 8000) < 1e-5
    assert np.corrcoef(mp3, y)[0, 1] > 0.5  # still the same signal
    again = degrade_audio.degrade(y, ("noise",), snr_db=10, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(noisy, again)


def test_corpus_copy_is_deterministic_and_survives_a_bad_file(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for i, label in enumerate(["bonafide", "spoof", "bonafide"]):
        write_wav(audio / f"u{i}.wav", tone(1.5, freq=150 + 40 * i, seed=i))
        rows.append({"file": f"u{i}.wav", "label": label})
    (audio / "bad.wav").write_bytes(b"not audio at all")
    rows.append({"file": "bad.wav", "label": "spoof"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    a = degrade_audio.degrade_corpus(tmp_path / "labels.csv", audio, tmp_path / "a")
    b = degrade_audio.degrade_corpus(tmp_path / "labels.csv", audio, tmp_path / "b")
    assert (a["written"], a["failed"]) == (3, 1)
    for i in range(3):
        ya, sr = sf.read(tmp_path / "a" / "flac" / f"u{i}.flac")
        yb, _ = sf.read(tmp_path / "b" / "flac" / f"u{i}.flac")
        assert sr == 16000 and ya.size == 24000
        np.testing.assert_array_equal(ya, yb)
    kept = pd.read_csv(tmp_path / "a" / "labels.csv")
    assert list(kept["file"]) == ["u0.flac", "u1.flac", "u2.flac"]
    assert list(kept["label"]) == ["bonafide", "spoof", "bonafide"]
    assert "bad" in (tmp_path / "a" / "errors.csv").read_text()
    again = degrade_audio.degrade_corpus(tmp_path / "labels.csv", audio, tmp_path / "a")
    assert (again["written"], again["kept"]) == (0, 3)


def test_augmented_views_are_distinct_seeded_copies_with_their_sources_labels(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for i, label in enumerate(["bonafide", "spoof"]):
        write_wav(audio / f"u{i}.wav", tone(1.2, freq=150 + 60 * i, seed=i))
        rows.append({"file": f"u{i}.wav", "label": label, "attack": "-" if i == 0 else "A07",
                     "speaker": "S9"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    chain = ("rawboost", "channel")
    a = degrade_audio.degrade_corpus(tmp_path / "labels.csv", audio, tmp_path / "a", chain,
                                     views=3, seed=4)
    assert (a["written"], a["failed"]) == (6, 0)
    kept = pd.read_csv(tmp_path / "a" / "labels.csv")
    assert list(kept["file"]) == [f"u{i}_v{k}.flac" for i in range(2) for k in range(3)]
    assert list(kept["label"]) == ["bonafide"] * 3 + ["spoof"] * 3
    assert list(kept["attack"]) == ["-"] * 3 + ["A07"] * 3 and set(kept["speaker"]) == {"S9"}
    views = [sf.read(tmp_path / "a" / "flac" / f"u0_v{k}.flac")[0] for k in range(3)]
    assert all(v.size == 19200 for v in views)
    assert not np.allclose(views[0], views[1], atol=1e-3)  # each view its own draw
    b = degrade_audio.degrade_corpus(tmp_path / "labels.csv", audio, tmp_path / "b", chain,
                                     views=3, seed=4)
    assert b["written"] == 6
    np.testing.assert_array_equal(views[2], sf.read(tmp_path / "b" / "flac" / "u0_v2.flac")[0])
    with pytest.raises(ValueError, match="--views must be >= 1"):
        degrade_audio.degrade_corpus(tmp_path / "labels.csv", audio, tmp_path / "c", views=0)
    with pytest.raises(SystemExit, match="unknown degradation"):
        degrade_audio.main(["--protocol", str(tmp_path / "labels.csv"), "--audio-dir",
                            str(audio), "--out", str(tmp_path / "d"), "--chain", "radio"])


def test_a_rerun_with_other_settings_or_bad_numbers_is_refused(tmp_path, capsys):
    """Issue 32, items 10, 11 and 13: copies made with --snr 40 are not kept and labelled as
    a --snr 0 run's; --limit -1 does not drop the last utterance; nan/inf/negative numbers
    get one line at parse time."""
    import degrade_audio
    from conftest import tone, write_wav

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(3):
        write_wav(audio / f"u{i}.wav", tone(1.0, seed=i))
    (tmp_path / "labels.csv").write_text("file,label\nu0.wav,bonafide\nu1.wav,spoof\n"
                                         "u2.wav,bonafide\n")
    common = ["--protocol", str(tmp_path / "labels.csv"), "--audio-dir", str(audio),
              "--out", str(tmp_path / "out"), "--chain", "noise"]
    summary = degrade_audio.main(common + ["--snr", "40"])
    assert summary["written"] == 3
    assert degrade_audio.main(common + ["--snr", "40"])["kept"] == 3  # a resume is fine
    with pytest.raises(SystemExit, match=r"other settings \(snr_db 40.0 -> 0.0; .*settings"
                                         r"\.json\): choose another --out"):
        degrade_audio.main(common + ["--snr", "0"])
    for bad in (["--snr", "nan"], ["--snr=-inf"], ["--limit", "-1"], ["--limit", "0"],
                ["--seed", "-1"], ["--views", "0"]):
        with pytest.raises(SystemExit) as e:
            degrade_audio.main(common + bad)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert bad[0].split("=")[0] in err and ("finite" in err or "out of range" in err)
    summary = degrade_audio.main(common[:4] + ["--out", str(tmp_path / "two"), "--limit",
                                               "2", "--chain", "noise"])
    assert summary["written"] == 2
