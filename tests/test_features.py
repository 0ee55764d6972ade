"""features.py: the feature definition, audio decoding, bad waveforms, drift refusal."""

import numpy as np
import pytest

from deepfake_detector import features
from conftest import tone, write_wav

def test_feature_params_give_exactly_128_frames():
    p = features.feature_params()
    assert p["clip_samples"] == p["n_fft"] + (p["n_frames"] - 1) * p["hop_length"]
    assert 3.9 < p["clip_samples"] / p["sample_rate"] < 4.1
    assert p["shape"] == [128, 128]


def test_features_shape_range_determinism():
    y = tone(2.5)
    a = features.compute_features(y)
    b = features.compute_features(y.copy())
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
    np.testing.assert_allclose(features.compute_features(y), expected, atol=1e-6)


@pytest.mark.parametrize("mel_args", [(16000, 1024, 128, 0.0, 8000.0),
                                      (16000, 512, 64, 20.0, 7600.0),
                                      (22050, 2048, 80, 0.0, 11025.0)])
def test_numpy_log_mel_gives_librosas_bits(mel_args):
    """The numpy STFT, filterbank and dB conversion equal librosa's to the last bit (both fits,
    lengths below, at and above the window), so arrays and models made before stay valid."""
    import librosa

    sr, n_fft, n_mels, fmin, fmax = mel_args
    np.testing.assert_array_equal(
        features.mel_filterbank(sr, n_fft, n_mels, fmin, fmax),
        librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                            dtype=np.float64))
    rng = np.random.default_rng(sum(mel_args[:3]))
    for fit in ("window", "resize"):
        p = features.feature_params(fit)
        for n in (800, 5000, p["clip_samples"] or 64524, 100_001):
            y = (rng.standard_normal(n) * rng.uniform(1e-3, 0.4)).astype(np.float32)
            x = features.fit_length(y, p["clip_samples"] or max(n, p["n_fft"]))
            power = np.abs(librosa.stft(x, n_fft=p["n_fft"], hop_length=p["hop_length"],
                                        window="hann", center=False)) ** 2.0
            np.testing.assert_array_equal(features.power_spectrogram(x, p), power)
            mel = (features.mel_filterbank(16000, 1024, 128, 0.0, 8000.0)
                   @ power.astype(np.float64)).astype(np.float32)
            np.testing.assert_array_equal(features.power_to_db(mel, 80.0),
                                          librosa.power_to_db(mel, ref=np.max, top_db=80.0))


def test_scoring_features_import_no_spectral_library():
    """Start-up: a process that decodes and computes mel arrays never imports scipy.signal
    or numba (librosa's spectral modules, about 1.5 s per process)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from deepfake_detector import features as F\n"
            "y = np.sin(np.arange(70000) / 7).astype(np.float32)\n"
            "assert F.compute_features(y).shape == (128, 128)\n"
            "print(sorted(m for m in ('scipy.signal', 'numba', 'librosa.core.spectrum')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.stdout.strip() == "[]"


def test_short_utterances_are_repeat_padded_and_long_ones_cropped_at_start():
    n = features.CLIP_SAMPLES
    short = tone(1.0, seed=1)
    padded = np.tile(short, -(-n // short.size))[:n]
    np.testing.assert_array_equal(features.compute_features(short),
                                  features.compute_features(padded))
    long = tone(7.0, seed=2)
    np.testing.assert_array_equal(features.compute_features(long),
                                  features.compute_features(long[:n]))
    assert features.fit_length(short, n).shape == (n,)


def test_resize_mode_keeps_the_whole_utterance():
    p = features.feature_params("resize")
    y = np.concatenate([tone(4.0, freq=200), tone(4.0, freq=600)])
    m = features.compute_features(y, p)
    assert m.shape == (128, 128)
    # the second half (600 Hz) is in the array: its low-frequency energy moves upwards
    w = features.compute_features(y)  # window mode sees only the first 4 s
    assert not np.allclose(m[:, 100:], w[:, 100:], atol=0.05)


def test_any_rate_and_channels_become_16k_mono(tmp_path):
    y16 = tone(2.0, sr=16000)
    ref = features.compute_features(y16)
    for sr in (8000, 22050, 44100, 48000):
        stereo = np.stack([tone(2.0, sr=sr), tone(2.0, sr=sr)], axis=1)
        path = write_wav(tmp_path / f"s{sr}.wav", stereo, sr)
        y = features.load_audio(path)
        assert y.ndim == 1 and abs(y.size - 32000) <= 1
        m = features.compute_features(y)
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
    with pytest.raises(features.AudioError, match=message):
        features.compute_features(y)


def test_feature_mismatch_names_the_parameters():
    a = features.feature_params()
    b = dict(a, hop_length=512, n_mels=64)
    with pytest.raises(features.FeatureMismatch, match="hop_length: model 500 vs data 512") as e:
        features.check_features(a, b, "best.keras", "data/x")
    assert "n_mels" in str(e.value) and "data/x" in str(e.value)
    features.check_features(a, dict(a))  # identical: no error


# ----------------------------------------------------------------------------- waveform arrays


def test_waveform_window_is_the_int16_window_of_the_mel_arrays():
    p = features.feature_params(kind="waveform")
    assert features.feature_kind(p) == "waveform" and features.feature_kind(
        features.feature_params()) == "mel"
    assert "kind" not in features.feature_params()  # mel folders written before stay valid
    assert features.array_spec(p) == ((64524,), "<i2")
    assert features.array_spec(features.feature_params()) == ((128, 128), "<f4")
    assert p["clip_samples"] == features.feature_params()["clip_samples"] == 64524
    short = tone(1.0)  # 16,000 samples: repeat-padded like the mel window
    w = features.compute_features(short, p)
    assert w.dtype == np.int16 and w.shape == (64524,)
    np.testing.assert_array_equal(w[:16000], np.round(short * 32768).astype(np.int16))
    np.testing.assert_array_equal(w[16000:32000], w[:16000])
    long = tone(6.0, seed=3)
    np.testing.assert_array_equal(features.compute_features(long, p),
                                  np.round(long[:64524] * 32768).astype(np.int16))
    loud = np.full(100, 1.2, np.float32)  # resampling can overshoot 1.0: clipped, not wrapped
    assert features.waveform_window(loud, p).min() == 32767
    with pytest.raises(features.AudioError, match="silent"):
        features.compute_features(np.zeros(16000, np.float32), p)
    with pytest.raises(ValueError, match="--fit resize applies to mel arrays only"):
        features.feature_params("resize", "waveform")
    with pytest.raises(ValueError, match="features must be one of mel, waveform"):
        features.feature_params(kind="raw")


def test_int16_arrays_are_read_and_checked_by_type(tmp_path):
    w = (np.arange(64524) % 2000 - 1000).astype(np.int16)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "f.npy", w.astype(np.float32))
    assert features.array_ok(tmp_path / "w.npy", (64524,), "<i2")
    assert not features.array_ok(tmp_path / "f.npy", (64524,), "<i2")
    assert not features.array_ok(tmp_path / "w.npy", (64524,))  # float32 expected
    np.testing.assert_array_equal(features.read_array(tmp_path / "w.npy", (64524,), "<i2"), w)
    with pytest.raises(ValueError, match="array of float32, expected int16 samples"):
        features.read_array(tmp_path / "f.npy", (64524,), "<i2")


def test_kind_mismatch_says_which_command_makes_the_right_arrays():
    with pytest.raises(features.FeatureMismatch,
                       match=r"best.keras reads waveform arrays but data/x holds mel arrays; "
                             r"preprocess the audio for this model with: python preprocess.py "
                             r"--features waveform"):
        features.check_features(features.feature_params(kind="waveform"),
                                features.feature_params(), "best.keras", "data/x")


# ----------------------------------------------------------------------------- hostile round 2

def test_loud_float_audio_gives_finite_features_of_the_same_sound(tmp_path):
    """A float WAV peaking at 1e20 used to overflow the power spectrum (all-NaN arrays)."""
    import soundfile as sf

    y = tone(2.0)
    sf.write(str(tmp_path / "loud.wav"), y * 1e20, 16000, subtype="FLOAT")
    loud = features.load_audio(tmp_path / "loud.wav")
    mel = features.compute_features(loud)
    assert np.isfinite(mel).all()
    np.testing.assert_allclose(mel, features.compute_features(y), atol=1e-4)
    wave = features.compute_features(loud, features.feature_params(kind="waveform"))
    same = features.compute_features(y / np.abs(y).max(), features.feature_params(kind="waveform"))
    assert np.abs(wave.astype(int) - same).max() <= 1  # float rounding of the scaling


def test_a_truncated_mp3_gives_only_what_it_holds(tmp_path):
    import soundfile as sf

    y = tone(5.0)
    sf.write(str(tmp_path / "full.mp3"), y, 16000, format="MP3", subtype="MPEG_LAYER_III")
    data = (tmp_path / "full.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[:len(data) // 2])
    with sf.SoundFile(str(tmp_path / "cut.mp3")) as f:
        assert f.frames >= 5 * 16000  # the header still claims the whole length
    cut = features.load_audio(tmp_path / "cut.mp3")
    assert 1.5 * 16000 < cut.size < 3.5 * 16000  # about half, never the header's 5 s
    full = features.load_audio(tmp_path / "full.mp3")
    np.testing.assert_allclose(cut[:16000], full[:16000], atol=1e-4)


def test_a_flac_of_unknown_length_is_decoded_within_the_budget(tmp_path):
    """An encoder writing to a pipe leaves STREAMINFO's total samples at 0 ("unknown");
    libsndfile then reports 2**63 - 1 frames, which was refused as 576460752303424 s long."""
    path = write_wav(tmp_path / "u.flac", tone(3.0))
    b = bytearray(path.read_bytes())
    b[8 + 13] &= 0xF0
    b[8 + 14:8 + 18] = b"\0\0\0\0"
    path.write_bytes(bytes(b))
    y = features.load_audio(path, max_seconds=10)
    assert 3 * 16000 - 1 <= y.size <= 3 * 16000  # libsndfile may not return the last frame
    np.testing.assert_allclose(y, features.load_audio(write_wav(tmp_path / "k.flac", tone(3.0)))
                               [:y.size], atol=1e-6)
    with pytest.raises(features.AudioError, match="too long") as e:
        features.load_audio(path, max_seconds=1)
    assert e.value.kind == "too_long"
