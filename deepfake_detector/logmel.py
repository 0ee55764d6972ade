"""The log-mel spectrogram in numpy alone: the STFT's power, Slaney's mel filterbank and the
conversion to decibels, each giving the same bits as librosa's ``stft``, ``filters.mel`` and
``power_to_db`` (tests/test_features.py compares them).

Why not librosa itself: importing its spectral modules costs each process about 1.5 s
(scipy.signal, numba), a fifth of preprocessing 2,000 files and part of every predict.py and
serve.py start (docs/speed.md). librosa stays the reference, and the path for a window or
centering this project never writes.
"""

import functools

import numpy as np

# Slaney's mel scale: 200/3 Hz per mel below 1 kHz, 27 mels per factor of 6.4 above
F_SP, MIN_LOG_HZ, LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
MIN_LOG_MEL = MIN_LOG_HZ / F_SP


def hz_to_mel(hz):
    """Slaney's mel scale (Auditory Toolbox; librosa's default, ``htk=False``): linear below
    1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor of 6.4).

    Parameters
    ----------
    hz : float or np.ndarray

    Returns
    -------
    mel : np.ndarray, float64, same shape
    """
    hz = np.asarray(hz, dtype=np.float64)
    log_part = MIN_LOG_MEL + np.log(np.maximum(hz, MIN_LOG_HZ) / MIN_LOG_HZ) / LOGSTEP
    return np.where(hz >= MIN_LOG_HZ, log_part, hz / F_SP)


def mel_to_hz(mel):
    """Inverse of `hz_to_mel`. mel : np.ndarray -> hz : np.ndarray, float64, same shape."""
    mel = np.asarray(mel, dtype=np.float64)
    log_part = MIN_LOG_HZ * np.exp(LOGSTEP * (np.maximum(mel, MIN_LOG_MEL) - MIN_LOG_MEL))
    return np.where(mel >= MIN_LOG_MEL, log_part, F_SP * mel)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sr, n_fft, n_mels, fmin, fmax):
    """Slaney-normalized triangular mel filterbank (area-normalized: 2 / bandwidth in Hz),
    shape (n_mels, 1 + n_fft // 2), float64, computed once per parameter set; the same numbers
    as ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
    dtype=np.float64)``."""
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    width = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_hz)
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    basis = np.maximum(0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=8)
def hann_window(n):
    """Periodic Hann window of ``n`` samples, float64: ``scipy.signal.get_window("hann", n)``,
    as the STFT uses it (librosa's ``window="hann"``)."""
    w = (0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n + 1)))[:-1]
    w.setflags(write=False)
    return w


def power_spectrogram(y, p):
    """|STFT|**power of a mono signal, shape (1 + n_fft // 2, n_frames), float32: what
    ``np.abs(librosa.stft(y, ...)) ** power`` gives for parameters ``p`` (`feature_params`).
    Frames start every ``hop_length`` samples at sample 0 (``center=False``), each weighted by
    the Hann window and transformed in float64, then stored as complex64 as librosa does."""
    if p["window"] != "hann" or p["win_length"] != p["n_fft"] or p["center"]:
        import librosa  # parameters this project never writes: librosa's general STFT

        return np.abs(librosa.stft(y, n_fft=p["n_fft"], hop_length=p["hop_length"],
                                   win_length=p["win_length"], window=p["window"],
                                   center=p["center"])) ** p["power"]
    frames = np.lib.stride_tricks.sliding_window_view(y, p["n_fft"])[::p["hop_length"]]
    spec = np.fft.rfft(frames * hann_window(p["n_fft"]), axis=-1).astype(np.complex64)
    return (np.abs(spec) ** p["power"]).T


def power_to_db(power, top_db, amin=1e-10):
    """Decibels relative to the maximum, floored ``top_db`` below it: ``10 log10(max(amin, S))
    - 10 log10(max(amin, max S))``, then at least ``max - top_db`` (librosa's
    ``power_to_db(S, ref=np.max, top_db=top_db)``). Same shape and dtype as ``power``."""
    db = 10.0 * np.log10(np.maximum(amin, power))
    db -= 10.0 * np.log10(np.maximum(amin, power.max()))
    return np.maximum(db, db.max() - top_db)
