"""The feature definition: one source of truth for how audio becomes a model input.

Every array this project trains on, evaluates or predicts from is made by `compute_features` with
the parameters of `feature_params`. Those parameters are written to ``features.json`` beside the
arrays (preprocess.py) and into every saved model (models/common.py), and `check_features`
refuses data computed differently, so training, evaluation and prediction cannot drift apart.

Two kinds of arrays (``--features`` of preprocess.py):

- ``mel`` (default): a normalized log-mel spectrogram, float32 (128, 128), for the CNN families.
  A 4 s window at 16 kHz is framed so that it gives exactly ``N_FRAMES`` frames:
  ``clip_samples = n_fft + (n_frames - 1) * hop`` (no centre padding).
- ``waveform``: the same ~4 s window of 16 kHz samples, as int16 (64,524,), for models that
  compute their own front end (the Whisper encoder's log-mel is a layer of the model), or a
  window of another length (``--clip-samples``: 64,600 for AASIST, its official input). int16 is
  lossless for 16-bit sources at 16 kHz, such as ASVspoof's FLAC files, and half the size of
  float32; prediction quantizes the same way, so training and prediction see the same numbers.
"""

import functools
import threading

import numpy as np

from . import audio
from .audio import MAX_RATE, MIN_RATE, AudioError  # noqa: F401 (AudioError: re-exported)
from .logmel import mel_filterbank, power_spectrogram, power_to_db  # noqa: F401 (re-exported)

# -----------------------------------------------------------------------------
SAMPLE_RATE = 16000
N_FFT = 1024  # 64 ms Hann window; 513 bins leave no empty mel filter at 128 mels
HOP_LENGTH = 500  # 31.25 ms
N_MELS = 128
N_FRAMES = 128
SHAPE = (N_MELS, N_FRAMES)  # one array: (mel bins, frames)
FMIN, FMAX = 0.0, SAMPLE_RATE / 2
TOP_DB = 80.0  # dynamic range kept below each utterance's peak, mapped to [0, 1]
SILENCE_PEAK = 1e-4  # peak amplitude (-80 dBFS) at or below which a file is "silent"
CLIP_SAMPLES = N_FFT + (N_FRAMES - 1) * HOP_LENGTH  # 64,524 samples = 4.03 s
FEATURE_VERSION = 1
FITS = ("window", "resize")
KINDS = ("mel", "waveform")  # what an array holds (preprocess.py --features)
INT16_SCALE = 32768.0  # waveform arrays: int16 sample = round(float sample * INT16_SCALE)
LOUD_PEAK = 2.0  # float audio peaking above this (6 dB over full scale, beyond any resampling
# overshoot) is scaled to peak 1 before features: scored, not turned into NaN or clipped noise
MAX_CLIP_SAMPLES = 30 * SAMPLE_RATE  # longest waveform window (Whisper's 30 s context)
# -----------------------------------------------------------------------------


class FeatureMismatch(ValueError):
    """Data preprocessed with other feature parameters than a model or another folder."""


def feature_params(fit="window", kind="mel", clip_samples=None):
    """The feature parameters as a JSON-serializable dict.

    Parameters
    ----------
    fit : {"window", "resize"}
        ``"window"`` (default) takes a fixed ~4 s window (repeat-padding short utterances, keeping
        the first ``clip_samples`` of long ones). ``"resize"`` computes the mel-spectrogram of the
        whole utterance and linearly resamples its time axis to ``n_frames`` frames (mel only).
    kind : {"mel", "waveform"}
        What the arrays hold (module docstring). Mel parameters carry no ``kind`` key (they
        predate the waveform kind, and saved folders and models stay comparable); waveform
        parameters say ``"kind": "waveform"``.
    clip_samples : int, optional
        Length of the waveform window (waveform arrays only): `CLIP_SAMPLES` (64,524, the
        mel window's span) by default; AASIST's official input is 64,600.

    Returns
    -------
    params : dict
        Everything that determines the arrays; compared key by key by `check_features`.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be 'window' or 'resize', got {fit!r}")
    if kind not in KINDS:
        raise ValueError(f"features must be one of {', '.join(KINDS)}, got {kind!r}")
    if clip_samples is not None and (kind != "waveform" or not 1 <= int(clip_samples)
                                     <= MAX_CLIP_SAMPLES):
        raise ValueError(f"--clip-samples applies to waveform arrays, from 1 to "
                         f"{MAX_CLIP_SAMPLES} samples (got {clip_samples} for {kind} arrays)")
    if kind == "waveform":
        n = CLIP_SAMPLES if clip_samples is None else int(clip_samples)
        if fit != "window":
            raise ValueError("waveform arrays hold a fixed window: --fit resize applies to mel "
                             "arrays only")
        return {"feature_version": FEATURE_VERSION, "kind": "waveform",
                "sample_rate": SAMPLE_RATE, "channels": "mono (mean of channels)",
                "fit": "window", "clip_samples": n, "pad": "repeat", "crop": "start",
                "normalization": f"none: int16 = round(sample * {INT16_SCALE:g}), clipped",
                "silence_peak": SILENCE_PEAK, "shape": [n], "dtype": "int16"}
    return {
        "feature_version": FEATURE_VERSION,
        "sample_rate": SAMPLE_RATE,
        "channels": "mono (mean of channels)",
        "fit": fit,
        "clip_samples": CLIP_SAMPLES if fit == "window" else None,
        "pad": "repeat" if fit == "window" else None,
        "crop": "start" if fit == "window" else None,
        "n_fft": N_FFT,
        "win_length": N_FFT,
        "window": "hann",
        "hop_length": HOP_LENGTH,
        "center": False,
        "n_mels": N_MELS,
        "n_frames": N_FRAMES,
        "fmin": FMIN,
        "fmax": FMAX,
        "power": 2.0,
        "db_ref": "max",
        "top_db": TOP_DB,
        "normalization": "(power_to_db(S, ref=max, top_db) + top_db) / top_db, in [0, 1]",
        "silence_peak": SILENCE_PEAK,
        "shape": list(SHAPE),
        "dtype": "float32",
    }


def feature_kind(params):
    """``"mel"`` or ``"waveform"``: what arrays of ``params`` hold (`feature_params`)."""
    return params.get("kind", "mel")


def array_spec(params):
    """``(shape, numpy dtype string)`` of one stored array of ``params``, e.g.
    ``((128, 128), "<f4")`` or ``((64524,), "<i2")``."""
    return (tuple(int(n) for n in params["shape"]),
            "<i2" if params.get("dtype") == "int16" else "<f4")


KIND_HINT = {"mel": "python preprocess.py ... (mel arrays, the default)",
             "waveform": "python preprocess.py --features waveform ..."}


def waveform_hint(clip_samples):
    """The preprocess.py command that makes waveform arrays of ``clip_samples``."""
    extra = "" if clip_samples == CLIP_SAMPLES else f" --clip-samples {clip_samples}"
    return f"python preprocess.py --features waveform{extra} ..."


def check_kind(want, params, reader, data_dir, whom="this model", clip_samples=None):
    """Raise `FeatureMismatch` when arrays of ``params`` are not of kind ``want`` (what
    ``reader``, a model file or ``--model`` flag, reads), or, given ``clip_samples``, waveform
    windows of another length; the message names the preprocess.py command that makes the
    right ones."""
    have = feature_kind(params)
    hint = waveform_hint(clip_samples) if clip_samples else KIND_HINT[want]
    if want != have:
        raise FeatureMismatch(f"{reader} reads {want} arrays but {data_dir} holds {have} "
                              f"arrays; preprocess the audio for {whom} with: {hint}")
    if clip_samples and params.get("clip_samples") != clip_samples:
        raise FeatureMismatch(f"{reader} reads waveform windows of {clip_samples} samples but "
                              f"{data_dir} holds windows of {params.get('clip_samples')}; "
                              f"preprocess the audio for {whom} with: {hint}")


# the ranges a parameter set may take (`check_params`): beyond them a model file or a folder
# was not written by this project, and computing with them could take any memory or time
PARAM_RANGES = {"sample_rate": (MIN_RATE, MAX_RATE), "n_fft": (16, 16384),
                "win_length": (16, 16384), "hop_length": (1, 16384), "n_mels": (1, 512),
                "n_frames": (1, 4096), "clip_samples": (1, MAX_CLIP_SAMPLES)}


def _bad(name, value, why):
    raise FeatureMismatch(f"feature parameter {name} = {str(value)[:40]!r}: {why}")


def check_params(params):
    """Refuse a feature parameter set (a ``features.json``, or the metadata inside a model
    file) that this project could not have written: a missing or unknown kind, a missing key,
    a value of the wrong type or out of `PARAM_RANGES` (``n_fft = 2**30`` would allocate
    gigabytes; ``hop_length = 0`` never ends), a shape that does not follow from the others.

    Raises
    ------
    FeatureMismatch
        One line naming the parameter and what is wrong with it.
    """
    import math

    if not isinstance(params, dict):
        _bad("features", params, "not a parameter dict")
    kind = params.get("kind", "mel")
    if kind not in KINDS:
        _bad("kind", kind, f"expected one of {', '.join(KINDS)}")
    need = (["sample_rate", "clip_samples", "shape"] if kind == "waveform" else
            ["sample_rate", "fit", "n_fft", "win_length", "hop_length", "n_mels", "n_frames",
             "fmin", "fmax", "power", "top_db", "silence_peak", "shape", "center"])
    for key in need:
        if key not in params:
            _bad(key, None, "missing")
    for key, (lo, hi) in PARAM_RANGES.items():
        v = params.get(key)
        if v is None and (key == "clip_samples" and params.get("fit") == "resize"
                          or key not in need):
            continue
        if type(v) is not int or not lo <= v <= hi:
            _bad(key, v, f"expected a whole number from {lo} to {hi}")
    if kind == "waveform":
        if params["shape"] != [params["clip_samples"]]:
            _bad("shape", params["shape"], "expected [clip_samples]")
        return params
    if params["fit"] not in FITS:
        _bad("fit", params["fit"], f"expected one of {', '.join(FITS)}")
    for key in ("fmin", "fmax", "power", "top_db", "silence_peak"):
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            _bad(key, v, "expected a finite number")
    if not (0 <= params["fmin"] < params["fmax"] <= params["sample_rate"] / 2):
        _bad("fmax", params["fmax"], "expected 0 <= fmin < fmax <= sample_rate / 2")
    if params["top_db"] <= 0 or params["power"] <= 0 or params["silence_peak"] < 0:
        _bad("top_db", params["top_db"], "top_db and power must be positive")
    if params["win_length"] > params["n_fft"]:
        _bad("win_length", params["win_length"], "longer than n_fft")
    if params["shape"] != [params["n_mels"], params["n_frames"]]:
        _bad("shape", params["shape"], "expected [n_mels, n_frames]")
    return params


def differing(a, b):
    """Sorted keys whose values differ between two parameter dicts (missing counts as None)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def check_features(model_features, data_features, model_path="model", data_dir="data"):
    """Raise `FeatureMismatch` naming every parameter in which data and model differ (a waveform
    window of another length names the preprocess.py command that makes the right one)."""
    kind = feature_kind(model_features)
    check_kind(kind, data_features, model_path, data_dir,
               clip_samples=model_features.get("clip_samples") if kind == "waveform" else None)
    diff = differing(model_features, data_features)
    if diff:
        detail = "; ".join(f"{k}: model {model_features.get(k)!r} vs data "
                           f"{data_features.get(k)!r}" for k in diff)
        raise FeatureMismatch(f"{data_dir} was preprocessed with other feature parameters than "
                              f"{model_path} was trained on ({detail}). Re-run preprocess.py "
                              "with the model's parameters.")


def load_audio(path, sr=SAMPLE_RATE, max_seconds=None):
    """Decode a file to mono float32 at ``sr`` (default `SAMPLE_RATE`), within a budget: see
    `audio.load_audio` (parameters, errors).

    Returns
    -------
    y : np.ndarray, shape (n_samples,), float32, finite
    """
    return audio.load_audio(path, sr, max_seconds)


def fit_length(y, n_samples):
    """Repeat-pad a short signal, or keep the first ``n_samples`` of a long one.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
    n_samples : int

    Returns
    -------
    y_fit : np.ndarray, shape (n_samples,)
    """
    if y.size == 0:
        raise AudioError("empty: no audio samples", "empty")
    if y.size >= n_samples:
        return y[:n_samples]
    reps = -(-n_samples // y.size)
    return np.tile(y, reps)[:n_samples]


def compute_features(y, params=None):
    """The array of one mono waveform at ``params["sample_rate"]``: a normalized log-mel
    spectrogram, or for ``kind="waveform"`` parameters the int16 window (`waveform_window`).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at the feature sample rate (see `load_audio`).
    params : dict, optional
        From `feature_params` (or a saved ``features.json``); defaults to ``feature_params()``.

    Returns
    -------
    mel : np.ndarray, shape (n_mels, n_frames) = (128, 128), float32, values in [0, 1]
        ``(dB + top_db) / top_db`` where dB is the power mel-spectrogram in decibels relative to
        its maximum, floored at ``-top_db``. For waveform parameters: shape (clip_samples,) =
        (64524,), int16.

    Raises
    ------
    AudioError
        Empty, non-finite or silent input.
    """
    p = params or feature_params()
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (n_samples,), got shape {y.shape}")
    if y.size == 0:
        raise AudioError("empty: no audio samples", "empty")
    if not np.isfinite(y).all():
        raise AudioError("audio contains NaN or inf samples", "nonfinite")
    peak = float(np.max(np.abs(y)))
    if peak <= p["silence_peak"]:
        db = 20 * np.log10(peak) if peak > 0 else -np.inf
        raise AudioError(f"silent: peak {db:.1f} dBFS is at or below "
                         f"{20 * np.log10(p['silence_peak']):.0f} dBFS", "silent")
    if peak > LOUD_PEAK:  # float audio far beyond full scale: its power would overflow (a peak
        y = y / peak  # of 1e20 squares to inf); mel features are relative to the maximum anyway
    if feature_kind(p) == "waveform":
        return waveform_window(y, p)
    if p["fit"] == "window":
        y = fit_length(y, p["clip_samples"])
    elif y.size < p["n_fft"]:
        y = fit_length(y, p["n_fft"])
    # = librosa.feature.melspectrogram, with the filterbank cached and a BLAS product (3x faster)
    spec = power_spectrogram(y, p)
    # float64 product: the result does not depend on how many BLAS threads sum it
    basis = mel_filterbank(p["sample_rate"], p["n_fft"], p["n_mels"], p["fmin"], p["fmax"])
    mel = (basis @ spec.astype(np.float64)).astype(np.float32)
    if p["fit"] == "resize" and mel.shape[1] != p["n_frames"]:
        src = np.linspace(0.0, 1.0, mel.shape[1])
        dst = np.linspace(0.0, 1.0, p["n_frames"])
        mel = np.stack([np.interp(dst, src, row) for row in mel])
    db = power_to_db(mel, p["top_db"])
    out = np.clip((db + p["top_db"]) / p["top_db"], 0.0, 1.0).astype(np.float32)
    if not np.isfinite(out).all():  # never written, trained on or scored
        raise AudioError("features are not finite (NaN or inf)", "nonfinite")
    expected = tuple(p["shape"])
    if out.shape != expected:  # a parameter set that does not give the promised shape
        raise ValueError(f"feature shape {out.shape} != {expected}; check the feature parameters")
    return out


def waveform_window(y, params):
    """The fixed window of a waveform array: repeat-padded or cut to ``clip_samples``, then
    ``round(y * 32768)`` clipped to int16 (lossless for 16-bit sources; soxr's resampling can
    overshoot 1.0 slightly, which is clipped).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,), float32
    params : dict
        Waveform feature parameters (`feature_params` with ``kind="waveform"``).

    Returns
    -------
    window : np.ndarray, shape (clip_samples,), int16
    """
    y = fit_length(np.asarray(y, np.float32), params["clip_samples"])
    return np.clip(np.round(y.astype(np.float64) * INT16_SCALE), -32768, 32767).astype(np.int16)


# ----------------------------------------------------------------------------- arrays

_NPY_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _npy_header(shape, dtype="<f4"):
    """The exact bytes ``np.save`` writes before the data of a C-order array (format 1.0)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def array_ok(path, shape, dtype="<f4"):
    """Whether ``path`` holds a complete array of ``shape`` and ``dtype`` (float32 mel arrays,
    int16 waveforms: `array_spec`) as this project writes them (header and size checked, data
    not read): a truncated, empty or foreign file is not."""
    import os

    header = _npy_header(tuple(int(s) for s in shape), dtype)
    try:
        with open(path, "rb") as f:
            return (f.read(len(header)) == header and os.fstat(f.fileno()).st_size
                    == len(header) + np.dtype(dtype).itemsize * int(np.prod(shape)))
    except OSError:
        return False


def read_array(path, shape, dtype="<f4"):
    """Read one stored feature array, checking its shape and type.

    ``np.load`` parses the .npy header with ``ast.literal_eval``, which CPython 3.11 can break
    when several threads parse at once (``SystemError: AST constructor recursion depth
    mismatch``, python/cpython#106905) -- exactly what tf.data's parallel readers do. The
    arrays this project writes have one known header per shape and type, so it is compared as
    bytes and the data read directly; anything else goes through ``np.load`` under a lock.

    Parameters
    ----------
    path : str or Path
    shape : tuple of int
        The expected shape (``features.json["shape"]``).
    dtype : {"<f4", "<i2"}
        The stored type (`array_spec`): float32 mel arrays, int16 waveforms.

    Returns
    -------
    x : np.ndarray, shape ``shape``, of ``dtype``

    Raises
    ------
    ValueError
        A file that is not a readable array of that shape (truncated, corrupt, other shape),
        with the file named.
    """
    import os

    shape = tuple(int(s) for s in shape)
    header = _npy_header(shape, dtype)
    with open(path, "rb") as f:
        x = np.empty(shape, dtype=dtype)
        if (f.read(len(header)) == header
                and os.fstat(f.fileno()).st_size == len(header) + x.nbytes
                and f.readinto(memoryview(x).cast("B")) == x.nbytes):
            return x
    try:
        with _NPY_LOCK:
            x = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises several types for corrupt files
        raise ValueError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") \
            from None
    if x.shape != shape:
        raise ValueError(f"{path}: array shape {x.shape}, expected {shape}")
    if np.dtype(dtype).kind == "i" and x.dtype != np.dtype(dtype):
        raise ValueError(f"{path}: array of {x.dtype}, expected {np.dtype(dtype)} samples")
    return x.astype(dtype, copy=False)
