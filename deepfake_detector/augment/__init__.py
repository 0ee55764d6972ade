"""Training-time augmentation: SpecAugment masks on mel arrays, and waveform perturbations
(random crop, RawBoost, a random codec and channel, gain, additive noise, codec-like low-pass)
applied to the source audio, which is read again and goes through the same
`features.compute_features` as every stored array.

Only the training part is ever augmented (`datasets.make_dataset` with ``augment``); validation,
evaluation and prediction read the stored arrays as they are. Every draw comes from a
``numpy.random.Generator`` seeded per example and epoch, so a run is repeatable from its seed.

The folder holds the waveform algorithms this module draws from: RawBoost (``rawboost``) and a
codec, packet loss and room (``channel``).
"""

import numpy as np

from . import channel as Ch
from .. import features as F
from . import rawboost as RB

# -----------------------------------------------------------------------------
# Augmentation (train.py flags; all off by default). Each waveform perturbation is applied to an
# example with probability p; SpecAugment masks always (their width is random, from 0).
AUGMENT_OFF = {"freq_mask": 0, "time_mask": 0, "masks": 1, "random_crop": False,
               "rawboost": 0, "channel": None, "gain_db": 0.0, "noise_snr_db": None,
               "lowpass_hz": None, "p": 0.5}
LOWPASS_ORDER = 8  # Butterworth order of the codec-like low-pass filter
# -----------------------------------------------------------------------------


def parse_range(spec, name, low=-np.inf, high=np.inf):
    """``"A,B"`` or ``(A, B)`` -> ``[A, B]`` with ``low <= A <= B <= high``; None for None, ""
    or "none"."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    try:
        a, b = (float(v) for v in (spec.split(",") if isinstance(spec, str) else spec))
    except (TypeError, ValueError):
        raise ValueError(f"{name} {spec!r}: expected two numbers LOW,HIGH") from None
    if not low <= a <= b <= high:
        raise ValueError(f"{name} {spec!r}: need {low:g} <= LOW <= HIGH <= {high:g}")
    return [a, b]


def augmentation(freq_mask=0, time_mask=0, masks=1, random_crop=False, gain_db=0.0,
                 noise_snr_db=None, lowpass_hz=None, p=0.5, sample_rate=F.SAMPLE_RATE,
                 rawboost=0, channel=None):
    """Checked augmentation settings (see `augment_example`); all off by default.

    Parameters
    ----------
    freq_mask, time_mask : int
        SpecAugment: maximum width, in mel bins and frames, of each frequency and time mask
        (0 = off). Park et al., "SpecAugment", Interspeech 2019.
    masks : int
        Masks of each kind per example.
    random_crop : bool
        Take the ~4 s window at a random position of longer utterances (preprocessing takes
        the start, as evaluation does).
    gain_db : float
        Random gain, uniform in ``[-gain_db, +gain_db]`` dB, then clipping to [-1, 1]. The
        features are normalized to their maximum, so a gain alone changes them only through
        clipping (and the level against added noise).
    noise_snr_db : (low, high), optional
        Add white Gaussian noise at an SNR drawn uniformly from this range (dB).
    lowpass_hz : (low, high), optional
        Codec-like band limiting: Butterworth low-pass (order `LOWPASS_ORDER`) with a cutoff
        drawn uniformly from this range (Hz, below Nyquist).
    p : float in (0, 1]
        Probability that each waveform perturbation (gain, noise, low-pass and each channel
        step) is applied.
    rawboost : int
        RawBoost algorithm 1-8 (`rawboost.ALGORITHMS`; 0 = off), applied to every example
        as in the paper, before the channel.
    channel : str or sequence, optional
        Channel steps of `channel.STEPS` (``"codec,dropout,reverb"``), each applied with
        probability ``p`` (`channel.channel`), to bonafide and spoof alike.

    Returns
    -------
    aug : dict or None
        None when nothing is on.
    """
    aug = {"freq_mask": int(freq_mask), "time_mask": int(time_mask), "masks": int(masks),
           "random_crop": bool(random_crop), "gain_db": float(gain_db),
           "noise_snr_db": parse_range(noise_snr_db, "noise SNR"),
           "lowpass_hz": parse_range(lowpass_hz, "low-pass cutoff", 1.0, sample_rate / 2 - 1),
           "p": float(p), "rawboost": int(rawboost), "channel": parse_channel(channel)}
    if aug["rawboost"] and aug["rawboost"] not in RB.ALGORITHMS:
        raise ValueError(f"--rawboost {aug['rawboost']}: expected 0 (off) or 1-8 ("
                         + "; ".join(f"{k} {v}" for k, v in RB.NAMES.items()) + ")")
    if aug["freq_mask"] < 0 or aug["time_mask"] < 0 or aug["masks"] < 1 or aug["gain_db"] < 0:
        raise ValueError("mask widths and --gain-db must be >= 0 and --masks >= 1")
    if not 0 < aug["p"] <= 1:
        raise ValueError(f"augmentation probability must be in (0, 1], got {aug['p']}")
    if aug == {**AUGMENT_OFF, "masks": aug["masks"], "p": aug["p"]}:
        return None
    return aug


def parse_channel(spec):
    """``"codec,dropout"`` or a sequence -> a checked list of `channel.STEPS`; None for None,
    "" or "none"."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    steps = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)
             if s.strip()]
    unknown = sorted(set(steps) - set(Ch.STEPS))
    if unknown or not steps:
        raise ValueError(f"--channel {spec!r}: choose steps from {', '.join(Ch.STEPS)}")
    return steps


def needs_audio(aug):
    """Whether ``aug`` perturbs the waveform (so the source audio must be read again)."""
    return bool(aug) and bool(aug["random_crop"] or aug["gain_db"] or aug["noise_snr_db"]
                              or aug["lowpass_hz"] or aug.get("rawboost")
                              or aug.get("channel"))


def augment_example(x, audio, rng, aug, params):
    """One augmented training example.

    Parameters
    ----------
    x : np.ndarray, shape (n_mels, n_frames), or None
        The stored array (used when no waveform perturbation is on). Masks apply to mel arrays
        only; with waveform parameters, the perturbed window is returned.
    audio : str
        Source audio file (manifest column ``audio``), read when `needs_audio`.
    rng : np.random.Generator
    aug : dict
        From `augmentation`.
    params : dict
        Feature parameters (``features.json``): the waveform goes through the same
        `features.compute_features` as every other array.

    Returns
    -------
    x_aug : np.ndarray, float32
        Shape (n_mels, n_frames), values in [0, 1]; for waveform parameters, shape
        (clip_samples,) holding int16 sample values.
    """
    if needs_audio(aug):
        sr = params["sample_rate"]
        y = F.load_audio(audio, sr)
        n = params["clip_samples"]
        if aug["random_crop"] and n and y.size > n:
            start = int(rng.integers(0, y.size - n + 1))
            y = y[start:start + n]
        if aug.get("rawboost"):
            y = RB.rawboost(y, aug["rawboost"], rng, sr)
        if aug.get("channel"):
            y = Ch.channel(y, rng, sr, aug["channel"], aug["p"])
        if aug["gain_db"] and rng.random() < aug["p"]:
            y = np.clip(y * 10 ** (rng.uniform(-aug["gain_db"], aug["gain_db"]) / 20), -1, 1)
        if aug["noise_snr_db"] and rng.random() < aug["p"]:
            snr = rng.uniform(*aug["noise_snr_db"])
            power = float(np.mean(np.square(y, dtype=np.float64)))
            y = y + rng.standard_normal(y.size) * np.sqrt(power / 10 ** (snr / 10))
        if aug["lowpass_hz"] and rng.random() < aug["p"]:
            from scipy.signal import butter, sosfilt

            sos = butter(LOWPASS_ORDER, rng.uniform(*aug["lowpass_hz"]), fs=sr, output="sos")
            y = sosfilt(sos, y)
        x = F.compute_features(np.asarray(y, dtype=np.float32), params)
    x = np.array(x, dtype=np.float32)  # a copy: masks never write into a stored array
    if x.ndim != 2:
        if aug["freq_mask"] or aug["time_mask"]:
            raise ValueError("SpecAugment masks apply to mel arrays, not to waveforms")
        return x
    fill = float(x.mean())  # SpecAugment replaces masked cells by the mean
    for _ in range(aug["masks"]):
        for axis, width in ((0, aug["freq_mask"]), (1, aug["time_mask"])):
            if width:
                w = int(rng.integers(0, min(width, x.shape[axis]) + 1))
                start = int(rng.integers(0, x.shape[axis] - w + 1))
                index = [slice(None)] * 2
                index[axis] = slice(start, start + w)
                x[tuple(index)] = fill
    return x
