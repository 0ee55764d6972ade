"""preprocess.py: protocol parsing, features, bad input, resume, atomic writes, real corpus."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import preprocess
from conftest import (FULL_PROTOCOLS, MINI_LA, SHARED, needs_full_protocols, needs_mini, tone,
                      write_wav)

# Real lines of the official ASVspoof 2019 LA protocols (train, dev, eval).
LINES_2019 = """\
LA_0079 LA_T_1138215 - - bonafide
LA_0079 LA_T_1004644 - A01 spoof
LA_0075 LA_D_1105131 - - bonafide
LA_0073 LA_D_1123562 - A03 spoof
LA_0011 LA_E_5118048 - A19 spoof
"""
# ASVspoof 2021 keys (keys/LA/CM/trial_metadata.txt and keys/DF/CM/trial_metadata.txt).
LINES_2021 = """\
LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval
LA_0031 LA_E_5932896 none - bonafide bonafide notrim eval
LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -
TEF2 DF_E_2000013 low_m4a vcc2020 Task1-team20 spoof notrim eval neural_vocoder_nonautoregressive Task1 team20 FF E
"""
# ASVspoof 5 protocol columns: SPEAKER FLAC_FILE GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG
# ATTACK_LABEL KEY TMP
LINES_5 = """\
T_4850 T_0000000000 F - - - AC3 A05 spoof -
T_1138 T_0000000001 M - - - bonafide bonafide bonafide -
D_0062 D_0000000002 F mp3 3 1 - A14 spoof -
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parse_asvspoof2019_lines(tmp_path):
    p = write(tmp_path, "p.txt", LINES_2019)
    assert preprocess.detect_format(p) == "asvspoof2019"
    df = preprocess.parse_protocol(p)
    assert list(df["utt_id"]) == ["LA_T_1138215", "LA_T_1004644", "LA_D_1105131", "LA_D_1123562",
                                  "LA_E_5118048"]
    assert list(df["label"]) == ["bonafide", "spoof", "bonafide", "spoof", "spoof"]
    assert list(df["attack"]) == ["-", "A01", "-", "A03", "A19"]
    assert list(df["speaker"]) == ["LA_0079", "LA_0079", "LA_0075", "LA_0073", "LA_0011"]


def test_parse_asvspoof2021_la_and_df_keys(tmp_path):
    p = write(tmp_path, "trial_metadata.txt", LINES_2021)
    assert preprocess.detect_format(p) == "asvspoof2021"
    df = preprocess.parse_protocol(p)
    assert list(df["utt_id"]) == ["LA_E_9332881", "LA_E_5932896", "DF_E_2000011", "DF_E_2000013"]
    assert list(df["label"]) == ["spoof", "bonafide", "spoof", "spoof"]
    assert list(df["attack"]) == ["A07", "-", "A14", "Task1-team20"]


def test_parse_asvspoof5_tsv(tmp_path):
    p = write(tmp_path, "ASVspoof5.train.tsv", LINES_5.replace(" ", "\t"))
    assert preprocess.detect_format(p) == "asvspoof5"
    df = preprocess.parse_protocol(p)
    assert list(df["utt_id"]) == ["T_0000000000", "T_0000000001", "D_0000000002"]
    assert list(df["label"]) == ["spoof", "bonafide", "spoof"]
    assert list(df["attack"]) == ["A05", "-", "A14"]
    assert list(df["speaker"]) == ["T_4850", "T_1138", "D_0062"]


def test_parse_csv_in_the_wild_spelling(tmp_path):
    p = write(tmp_path, "meta.csv", "file,speaker,label\n0.wav,Alec Guinness,spoof\n"
                                    "1.wav,Alec Guinness,bona-fide\n2.wav,Bob,Bonafide\n")
    assert preprocess.detect_format(p) == "csv"
    df = preprocess.parse_protocol(p)
    assert list(df["utt_id"]) == ["0", "1", "2"]
    assert list(df["label"]) == ["spoof", "bonafide", "bonafide"]
    assert list(df["attack"]) == ["spoof", "-", "-"]
    assert list(df["speaker"]) == ["Alec Guinness", "Alec Guinness", "Bob"]


def test_csv_ids_stay_unique_when_stems_collide(tmp_path):
    p = write(tmp_path, "l.csv", "file,label\nreal/a.wav,bonafide\nfake/a.wav,spoof\n")
    df = preprocess.parse_protocol(p)
    assert list(df["utt_id"]) == ["real__a", "fake__a"]


@pytest.mark.parametrize("text, fmt, message", [
    ("LA_0079 LA_T_1 - A01 maybe\n", "asvspoof2019", "p.txt:1: unknown label 'maybe'"),
    ("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - A01\n", "asvspoof2019",
     "p.txt:2: expected 5-5 columns for asvspoof2019, got 4"),
    ("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_1 - A01 spoof\n", None,
     "listed more than once, e.g. 'LA_T_1'"),
    ("one two three\n", None, "cannot tell the protocol format"),
    ("", None, "protocol file is empty"),
    ("name,key\na.wav,spoof\n", "csv", "needs a header with 'file' and 'label'"),
])
def test_protocol_errors_name_file_and_problem(tmp_path, text, fmt, message):
    p = write(tmp_path, "p.txt", text)
    with pytest.raises(preprocess.ProtocolError, match="p.txt") as e:
        preprocess.parse_protocol(p, fmt)
    assert message in str(e.value)


@needs_full_protocols
@pytest.mark.parametrize("split, n_bona, n_spoof, attacks", [
    ("train.trn", 2580, 22800, [f"A0{i}" for i in range(1, 7)]),
    ("dev.trl", 2548, 22296, [f"A0{i}" for i in range(1, 7)]),
    ("eval.trl", 7355, 63882, [f"A{i:02d}" for i in range(7, 20)]),
])
def test_full_official_protocols(split, n_bona, n_spoof, attacks):
    df = preprocess.parse_protocol(FULL_PROTOCOLS / f"ASVspoof2019.LA.cm.{split}.txt")
    assert (df["label"] == "bonafide").sum() == n_bona
    assert (df["label"] == "spoof").sum() == n_spoof
    assert sorted(df.loc[df["label"] == "spoof", "attack"].unique()) == attacks
    assert set(df.loc[df["label"] == "bonafide", "attack"]) == {"-"}


# ----------------------------------------------------------------------------- features

def test_feature_params_give_exactly_128_frames():
    p = preprocess.feature_params()
    assert p["clip_samples"] == p["n_fft"] + (p["n_frames"] - 1) * p["hop_length"]
    assert 3.9 < p["clip_samples"] / p["sample_rate"] < 4.1
    assert p["shape"] == [128, 128]


def test_features_shape_range_determinism():
    y = tone(2.5)
    a = preprocess.compute_features(y)
    b = preprocess.compute_features(y.copy())
    assert a.shape == (128, 128) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(a, b)


def test_features_follow_the_stated_definition():
    """Spelled out with literal values: 16 kHz, 1024-point Hann, hop 500, no centring, 128 mels
    up to 8 kHz, dB re max floored at -80, mapped to [0, 1]."""
    import librosa

    y = tone(2.5)
    clip = np.tile(y, 2)[:64524]
    S = librosa.feature.melspectrogram(y=clip, sr=16000, n_fft=1024, hop_length=500,
                                       center=False, n_mels=128, fmax=8000, power=2.0)
    expected = (librosa.power_to_db(S, ref=np.max, top_db=80) + 80) / 80
    np.testing.assert_allclose(preprocess.compute_features(y), expected, atol=1e-6)


def test_short_utterances_are_repeat_padded_and_long_ones_cropped_at_start():
    n = preprocess.CLIP_SAMPLES
    short = tone(1.0, seed=1)
    padded = np.tile(short, -(-n // short.size))[:n]
    np.testing.assert_array_equal(preprocess.compute_features(short),
                                  preprocess.compute_features(padded))
    long = tone(7.0, seed=2)
    np.testing.assert_array_equal(preprocess.compute_features(long),
                                  preprocess.compute_features(long[:n]))
    assert preprocess.fit_length(short, n).shape == (n,)


def test_resize_mode_keeps_the_whole_utterance():
    p = preprocess.feature_params("resize")
    y = np.concatenate([tone(4.0, freq=200), tone(4.0, freq=600)])
    m = preprocess.compute_features(y, p)
    assert m.shape == (128, 128)
    # the second half (600 Hz) is in the array: its low-frequency energy moves upwards
    w = preprocess.compute_features(y)  # window mode sees only the first 4 s
    assert not np.allclose(m[:, 100:], w[:, 100:], atol=0.05)


def test_any_rate_and_channels_become_16k_mono(tmp_path):
    y16 = tone(2.0, sr=16000)
    ref = preprocess.compute_features(y16)
    for sr in (8000, 22050, 44100, 48000):
        stereo = np.stack([tone(2.0, sr=sr), tone(2.0, sr=sr)], axis=1)
        path = write_wav(tmp_path / f"s{sr}.wav", stereo, sr)
        y = preprocess.load_audio(path)
        assert y.ndim == 1 and abs(y.size - 32000) <= 1
        m = preprocess.compute_features(y)
        # same content, different rate: same picture up to resampling (8 kHz loses > 4 kHz)
        rows = 128 if sr > 16000 else 90
        assert np.abs(m[:rows] - ref[:rows]).mean() < 0.08, sr


@pytest.mark.parametrize("y, message", [
    (np.zeros(16000, np.float32), "silent"),
    (np.full(16000, 1e-5, np.float32), "silent"),
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.1, np.nan] * 100, np.float32), "NaN"),
])
def test_bad_waveforms_raise_audio_error(y, message):
    with pytest.raises(preprocess.AudioError, match=message):
        preprocess.compute_features(y)


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
    assert json.loads((out / "features.json").read_text()) == preprocess.feature_params()


def test_strict_stops_on_missing_audio_naming_the_file(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    with pytest.raises(SystemExit, match="U_missing.flac"):
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


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def explode(f, arr, allow_pickle):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(preprocess.np, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        preprocess.save_npy_atomic(tmp_path / "x.npy", np.zeros((2, 2)))
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_mix_feature_parameters(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    out = tmp_path / "out"
    preprocess.preprocess(protocol, audio, out, workers=1, progress=False)
    with pytest.raises(SystemExit, match="differ in: .*fit"):
        preprocess.preprocess(protocol, audio, out, workers=1, fit="resize", progress=False)


def test_workers_give_identical_arrays(messy_corpus, tmp_path):
    protocol, audio = messy_corpus
    s1 = preprocess.preprocess(protocol, audio, tmp_path / "w1", workers=1, progress=False)
    s2 = preprocess.preprocess(protocol, audio, tmp_path / "w2", workers=2, progress=False)
    assert (s1["written"], s1["failed"]) == (s2["written"], s2["failed"]) == (4, 4)
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


def test_2019_layout_errors_list_what_was_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match="ASVspoof2019.LA.cm.dev.trl.txt"):
        preprocess.resolve_2019_layout(tmp_path, "dev")


def test_main_with_protocol_and_missing_audio_dir(tmp_path, capsys):
    with pytest.raises(SystemExit, match="does not exist"):
        preprocess.main(["--protocol", str(write(tmp_path, "p.txt", LINES_2019)),
                         "--audio-dir", str(tmp_path / "nope")])


@needs_mini
def test_genuine_mini_corpus_all_202_files(tmp_path):
    n = 0
    for split in ("train", "dev"):
        out = tmp_path / split
        s = preprocess.main(["--dataset-root", str(MINI_LA), "--split", split, "--out", str(out),
                             "--workers", "2"])
        assert s["failed"] == 0 and s["missing"] == 0
        protocol = preprocess.parse_protocol(
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
