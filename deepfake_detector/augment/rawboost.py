"""RawBoost: data boosting on the raw waveform for spoofing countermeasures.

Tak, Kamble, Patino, Todisco, Evans, "RawBoost: A Raw Data Boosting and Augmentation Method
applied to Automatic Speaker Verification Anti-Spoofing", ICASSP 2022 (arXiv:2111.04433). Three
signal-processing algorithms, written here from the paper's equations with the parameter
values of its experiments (`DEFAULTS`):

1. **linear and non-linear convolutive noise** (LnL, eq. 1-3): a sum of ``N_f`` higher-order
   terms ``x**j`` (j = 1..N_f), each through its own random multi-band notch filter (FIR
   band-stops of random centre, width and length), the higher orders attenuated by a random bias;
   it models the channel of a telephone line or a codec;
2. **impulsive signal-dependent additive noise** (ISD, eq. 4): up to ``P`` % of the samples,
   at random positions, moved by ``g_sd * x[i] * z`` with ``z`` the product of two uniform
   draws in [-1, 1] (clipping, quantization and other non-linear distortion);
3. **stationary signal-independent additive noise** (SSI, eq. 5): white noise coloured by a
   random FIR filter, added at an SNR drawn in ``[snr_min, snr_max]`` dB.

`ALGORITHMS` numbers them and their combinations as the paper's ablation does (1-3 alone,
4 = 1+2+3 in series, 5 = 1+2, 6 = 1+3, 7 = 2+3 in series, 8 = 1 and 2 in parallel, summed);
the authors' wav2vec 2.0 recipes train with 5 (LnL + ISD) for LA and 3 (SSI) for DF.
Every random draw comes from the ``numpy.random.Generator`` passed in: the same generator state
gives the same output. Output: same length as the input, float32; divided by its peak when
that exceeds 1 (after LnL, ISD and their parallel sum as in the paper, and at the end, so
that the result stays a valid 16-bit waveform).
"""

import numpy as np

# -----------------------------------------------------------------------------
# the parameter values of the paper's experiments (its Table 1 and the published recipes)
DEFAULTS = {
    "n_f": 5,             # LnL: order of the non-linearity (terms x, x^2, ..., x^N_f)
    "n_bands": 5,         # notch bands per random filter (LnL and SSI)
    "min_f": 20.0, "max_f": 8000.0,        # band centre frequencies, Hz
    "min_bw": 100.0, "max_bw": 1000.0,     # band widths, Hz
    "min_coeff": 10, "max_coeff": 100,     # FIR filter lengths of a band
    "min_g": 0.0, "max_g": 0.0,            # filter gain, dB
    "min_bias": 5.0, "max_bias": 20.0,     # LnL: attenuation of the non-linear terms, dB
    "p": 10.0,            # ISD: at most P % of the samples are hit
    "g_sd": 2.0,          # ISD: impulse gain
    "snr_min": 10.0, "snr_max": 40.0,      # SSI: SNR range, dB
}
ALGORITHMS = {1: ("lnl",), 2: ("isd",), 3: ("ssi",), 4: ("lnl", "isd", "ssi"),
              5: ("lnl", "isd"), 6: ("lnl", "ssi"), 7: ("isd", "ssi"), 8: ("lnl|isd",)}
NAMES = {1: "LnL convolutive noise", 2: "ISD impulsive noise", 3: "SSI coloured noise",
         4: "LnL + ISD + SSI (series)", 5: "LnL + ISD (series)", 6: "LnL + SSI (series)",
         7: "ISD + SSI (series)", 8: "LnL and ISD in parallel"}
# -----------------------------------------------------------------------------


def _peak_normalize(y, always=False):
    """Divide by the peak magnitude: always, or only when it exceeds 1 (the paper's
    normalization after LnL and ISD)."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y / peak if peak > 0 and (always or peak > 1) else y


def notch_filter(rng, sr, n_bands, min_f, max_f, min_bw, max_bw, min_coeff, max_coeff,
                 min_g, max_g):
    """A random multi-band notch filter: the convolution of ``n_bands`` band-stop FIR filters
    (Hamming window; centre, width and odd length drawn uniformly), scaled to a peak
    magnitude response of ``10 ** (g / 20)`` with ``g`` drawn in [min_g, max_g] dB.

    Returns
    -------
    b : np.ndarray, shape (taps,), float64
    """
    from scipy import signal

    b = np.ones(1)
    for _ in range(n_bands):
        fc = rng.uniform(min_f, max_f)
        bw = rng.uniform(min_bw, max_bw)
        taps = int(rng.uniform(min_coeff, max_coeff))
        taps += 1 - taps % 2  # odd: a band-stop FIR must pass Nyquist (type I)
        lo, hi = max(fc - bw / 2, 1e-3), min(fc + bw / 2, sr / 2 - 1e-3)
        b = np.convolve(signal.firwin(taps, [lo, hi], window="hamming", pass_zero="bandstop",
                                      fs=sr), b)
    gain = min_g + (max_g - min_g) * rng.random()  # LnL's biased range has min_g > max_g
    _, h = signal.freqz(b, 1, fs=sr)
    return 10 ** (gain / 20) * b / np.max(np.abs(h))


def fir(y, b):
    """``y`` through the FIR filter ``b``, delay-compensated (the output lines up with the
    input): shape (n,) -> (n,)."""
    from scipy import signal

    half = len(b) // 2
    return signal.lfilter(b, 1, np.pad(y, (0, half)))[half:half + y.size]


def _filter_args(p, sr):
    keys = ("n_bands", "min_f", "max_f", "min_bw", "max_bw", "min_coeff", "max_coeff")
    args = {k: p[k] for k in keys}
    args["max_f"] = min(args["max_f"], sr / 2)
    return args


def lnl(y, rng, sr, **params):
    """Algorithm 1, linear and non-linear convolutive noise (module docstring)."""
    p = {**DEFAULTS, **params}
    out = np.zeros_like(y)
    min_g, max_g = p["min_g"], p["max_g"]
    for j in range(1, int(p["n_f"]) + 1):
        if j == 2:  # the non-linear terms are attenuated by a random bias
            min_g, max_g = min_g - p["min_bias"], max_g - p["max_bias"]
        b = notch_filter(rng, sr, min_g=min_g, max_g=max_g, **_filter_args(p, sr))
        out += fir(y ** j, b)
    return _peak_normalize(out - out.mean())


def isd(y, rng, sr=None, **params):
    """Algorithm 2, impulsive signal-dependent additive noise (module docstring)."""
    p = {**DEFAULTS, **params}
    share = rng.uniform(0, p["p"]) / 100
    idx = rng.permutation(y.size)[:int(y.size * share)]
    z = (2 * rng.random(idx.size) - 1) * (2 * rng.random(idx.size) - 1)
    out = y.copy()
    out[idx] += p["g_sd"] * y[idx] * z
    return _peak_normalize(out)


def ssi(y, rng, sr, **params):
    """Algorithm 3, stationary signal-independent (coloured) additive noise (module
    docstring)."""
    p = {**DEFAULTS, **params}
    noise = rng.standard_normal(y.size)
    b = notch_filter(rng, sr, min_g=p["min_g"], max_g=p["max_g"], **_filter_args(p, sr))
    noise = _peak_normalize(fir(noise, b), always=True)
    snr = rng.uniform(p["snr_min"], p["snr_max"])
    scale = np.linalg.norm(y) / (np.linalg.norm(noise) or 1.0) / 10 ** (snr / 20)
    return y + noise * scale


STEPS = {"lnl": lnl, "isd": isd, "ssi": ssi}


def rawboost(y, algorithm, rng, sr=16000, **params):
    """One RawBoost draw of a waveform.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Mono waveform, floats in [-1, 1].
    algorithm : int
        1-8 (`ALGORITHMS`, `NAMES`); 0 returns ``y`` unchanged.
    rng : np.random.Generator
    sr : int
        Sample rate (the filters' band edges are in Hz).
    **params
        Overrides of `DEFAULTS`.

    Returns
    -------
    y_boosted : np.ndarray, shape (n,), float32
    """
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown RawBoost parameter(s) {unknown}; expected {sorted(DEFAULTS)}")
    if algorithm == 0:
        return np.asarray(y, np.float32)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"RawBoost algorithm {algorithm!r}: expected 0 (off) or one of "
                         + ", ".join(f"{k} ({v})" for k, v in NAMES.items()))
    y = np.asarray(y, np.float64)
    if y.ndim != 1 or not np.all(np.isfinite(y)):
        raise ValueError(f"RawBoost needs a finite mono waveform, got shape {y.shape}")
    for step in ALGORITHMS[algorithm]:
        if step == "lnl|isd":  # parallel: both from the same input, summed
            y = _peak_normalize(lnl(y, rng, sr, **params) + isd(y, rng, sr, **params))
        else:
            y = STEPS[step](y, rng, sr, **params)
    return _peak_normalize(y).astype(np.float32)
