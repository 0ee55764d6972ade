"""deepfake_detector.augment.rawboost and .channel (the waveform augmentations of train.py
--rawboost and --channel, and of scripts/degrade_audio.py): each algorithm does what its
definition says, keeps length, level bounds and sample rate, is the same for the same seed, and
training-only."""

import numpy as np
import pytest

from conftest import tone, write_wav
from deepfake_detector import augment, features
from deepfake_detector.augment import channel, rawboost

SR = 16000


def speechlike(seconds=2.0, seed=0, amp=0.3):
    """A tone with a slow envelope and some noise (energy across the band)."""
    y = tone(seconds, freq=170, amp=amp, seed=seed).astype(np.float64)
    t = np.arange(y.size) / SR
    return (y * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            + 0.01 * np.random.default_rng(seed).standard_normal(y.size))


def band_energy(y, lo, hi):
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(y.size, 1 / SR)
    return spec[(f >= lo) & (f < hi)].sum() / spec.sum()


# ----------------------------------------------------------------------------- RawBoost


@pytest.mark.parametrize("algorithm", sorted(rawboost.ALGORITHMS))
def test_every_algorithm_keeps_length_is_seeded_and_bounded(algorithm):
    y = speechlike()
    out = rawboost.rawboost(y, algorithm, np.random.default_rng(3))
    assert out.shape == y.shape and out.dtype == np.float32
    assert np.max(np.abs(out)) <= 1.0 and np.all(np.isfinite(out))
    assert not np.allclose(out, y, atol=1e-4)  # it did something
    np.testing.assert_array_equal(out, rawboost.rawboost(y, algorithm, np.random.default_rng(3)))
    assert not np.array_equal(out, rawboost.rawboost(y, algorithm, np.random.default_rng(4)))


def test_notch_filter_peak_gain_is_the_drawn_gain():
    from scipy import signal

    args = dict(n_bands=5, min_f=20, max_f=8000, min_bw=100, max_bw=1000, min_coeff=10,
                max_coeff=100)
    for gain in (0.0, -10.0):
        b = rawboost.notch_filter(np.random.default_rng(0), SR, min_g=gain, max_g=gain, **args)
        _, h = signal.freqz(b, 1, fs=SR)  # the 512-point grid it is scaled on
        assert np.max(np.abs(h)) == pytest.approx(10 ** (gain / 20), rel=1e-9)
        _, fine = signal.freqz(b, 1, worN=8192, fs=SR)
        assert np.max(np.abs(fine)) == pytest.approx(10 ** (gain / 20), rel=1e-3)
        assert len(b) % 2 == 1  # odd band-stops: linear phase, delay len // 2
    impulse = np.zeros(301)
    impulse[150] = 1
    b = rawboost.notch_filter(np.random.default_rng(1), SR, min_g=0, max_g=0, **args)
    out = rawboost.fir(impulse, b)  # delay-compensated: the response is centred on the input
    assert out.shape == impulse.shape and np.argmax(np.abs(out)) == 150


def test_isd_moves_at_most_p_percent_of_samples_by_at_most_g_sd_times_the_sample():
    y = speechlike(amp=0.05)  # quiet: no normalization afterwards
    out = rawboost.isd(y, np.random.default_rng(2), SR, p=10, g_sd=2)
    moved = out != y
    assert 0 < moved.mean() <= 0.10
    assert np.all(np.abs(out - y)[moved] <= 2 * np.abs(y[moved]) + 1e-12)


def test_ssi_adds_noise_at_an_snr_in_the_range():
    y = speechlike(amp=0.05)
    for seed in range(5):
        out = rawboost.ssi(y, np.random.default_rng(seed), SR, snr_min=10, snr_max=40)
        snr = 20 * np.log10(np.linalg.norm(y) / np.linalg.norm(out - y))
        assert 10 - 1e-6 <= snr <= 40 + 1e-6


def test_series_and_parallel_combinations_follow_their_definition():
    y = speechlike()
    rng = np.random.default_rng(5)
    series = rawboost.isd(rawboost.lnl(y, rng, SR), rng, SR)
    np.testing.assert_allclose(rawboost.rawboost(y, 5, np.random.default_rng(5)),
                               rawboost._peak_normalize(series).astype(np.float32), atol=1e-7)
    rng = np.random.default_rng(6)
    parallel = rawboost._peak_normalize(rawboost.lnl(y, rng, SR) + rawboost.isd(y, rng, SR))
    np.testing.assert_allclose(rawboost.rawboost(y, 8, np.random.default_rng(6)),
                               parallel.astype(np.float32), atol=1e-7)
    # LnL's first term alone (N_f = 1, gain 0 dB) is a notch filter: it can only remove energy
    one = rawboost.lnl(y, np.random.default_rng(7), SR, n_f=1)
    assert np.sum(one ** 2) <= np.sum((y - y.mean()) ** 2) * (1 + 1e-9)


def test_rawboost_refuses_what_it_cannot_do():
    y = speechlike()
    np.testing.assert_array_equal(rawboost.rawboost(y, 0, np.random.default_rng(0)),
                                  y.astype(np.float32))
    with pytest.raises(ValueError, match=r"algorithm 9.*5 \(LnL \+ ISD \(series\)\)"):
        rawboost.rawboost(y, 9, np.random.default_rng(0))
    with pytest.raises(ValueError, match="finite mono waveform"):
        rawboost.rawboost(np.r_[y, np.nan], 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"unknown RawBoost parameter\(s\) \['snr'\]"):
        rawboost.rawboost(y, 3, np.random.default_rng(0), snr=3)


# ----------------------------------------------------------------------------- channel


@pytest.mark.parametrize("name", sorted(channel.CODECS))
def test_every_codec_keeps_length_and_signal(name):
    y = speechlike() + 0.02 * np.sin(2 * np.pi * 6000 * np.arange(2 * SR) / SR)
    out = channel.codec(y, name, np.random.default_rng(0))
    assert out.shape == y.shape and np.all(np.isfinite(out))
    lag = np.argmax(np.correlate(out[:4000], y[:4000], "full")) - 3999
    assert abs(lag) < 400  # aligned within 25 ms of codec delay
    assert np.corrcoef(np.roll(out, -lag), y)[0, 1] > 0.8
    if channel.CODECS[name][2] == 8000:  # telephone band: nothing above 4 kHz survives
        assert band_energy(out, 4500, 8000) < 1e-3 < band_energy(y, 4500, 8000)
    np.testing.assert_array_equal(out, channel.codec(y, name, np.random.default_rng(0)))


def test_codec_quality_changes_the_error_and_every_drawn_quality_encodes():
    y = speechlike()
    err = {q: np.mean((channel.codec(y, "opus", quality=q) - y) ** 2) for q in (0.0, 1.0)}
    assert err[1.0] > err[0.0]
    for name, (_, _, _, q_range) in channel.CODECS.items():
        for q in q_range or ():  # both ends of the range a draw can take
            assert channel.codec(y, name, quality=q).shape == y.shape
    with pytest.raises(ValueError, match="unknown codec 'aac'"):
        channel.check_codecs("mp3,aac")
    assert channel.check_codecs("mp3, gsm") == ("mp3", "gsm")


def test_dropout_zeroes_whole_packets_at_the_drawn_rate():
    y = np.ones(SR * 10)
    out = channel.dropout(y, np.random.default_rng(0), SR, rate=0.2)
    frames = out.reshape(-1, int(channel.FRAME_S * SR))
    assert set(np.unique(frames.min(axis=1) == frames.max(axis=1))) == {True}  # whole packets
    assert 0.15 < np.mean(frames[:, 0] == 0) < 0.25
    np.testing.assert_array_equal(channel.dropout(y, np.random.default_rng(0), SR, rate=0), y)


def test_reverb_keeps_level_and_length_and_adds_a_tail():
    y = np.zeros(SR)
    y[:800] = speechlike(0.05)
    h = channel.room_impulse_response(np.random.default_rng(0), SR, rt60=0.5)
    assert np.max(np.abs(h)) == pytest.approx(1.0) and h.size > 0.1 * SR
    out = channel.reverb(y, np.random.default_rng(1), SR)
    assert out.shape == y.shape
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(y ** 2)), rel=1e-6)
    assert np.sum(out[2000:] ** 2) > 1e-4 * np.sum(out ** 2)  # energy after the sound ends


def test_channel_is_seeded_bounded_and_checks_its_input():
    y = speechlike()
    a = channel.channel(y, np.random.default_rng(9), SR, p=1.0)
    assert a.shape == y.shape and a.dtype == np.float32 and np.max(np.abs(a)) <= 1
    np.testing.assert_array_equal(a, channel.channel(y, np.random.default_rng(9), SR, p=1.0))
    assert not np.allclose(a, y, atol=1e-3)
    np.testing.assert_array_equal(channel.channel(y, np.random.default_rng(9), SR, p=0.0),
                                  y.astype(np.float32))
    with pytest.raises(ValueError, match="unknown channel step"):
        channel.channel(y, np.random.default_rng(0), SR, steps=("codec", "radio"))
    with pytest.raises(ValueError, match="finite mono waveform"):
        channel.channel(np.full(100, np.inf), np.random.default_rng(0), SR)


# ----------------------------------------------------------------------------- in training


def test_training_augmentation_settings_and_draws(tmp_path):
    with pytest.raises(ValueError, match=r"--rawboost 9: expected 0 \(off\) or 1-8"):
        augment.augmentation(rawboost=9)
    with pytest.raises(ValueError, match="--channel 'codec,radio'"):
        augment.augmentation(channel="codec,radio")
    aug = augment.augmentation(rawboost=5, channel="codec,dropout,reverb", p=1.0)
    assert augment.needs_audio(aug) and aug["channel"] == ["codec", "dropout", "reverb"]
    assert augment.augmentation(rawboost=0, channel="none") is None

    params = features.feature_params(kind="waveform", clip_samples=32000)
    wav = write_wav(tmp_path / "u.wav", speechlike(2.5).astype(np.float32))
    plain = features.compute_features(features.load_audio(wav), params)
    x1 = augment.augment_example(None, str(wav), np.random.default_rng(1), aug, params)
    x2 = augment.augment_example(None, str(wav), np.random.default_rng(1), aug, params)
    assert x1.shape == plain.shape == (32000,)
    np.testing.assert_array_equal(x1, x2)  # seeded per example and epoch
    assert not np.array_equal(x1, plain) and np.max(np.abs(x1)) <= 32767
