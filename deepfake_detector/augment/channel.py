"""Codec and channel augmentation: what a recording goes through between a talker (or a
synthesizer) and a detector, drawn at random and applied to bonafide and spoof alike so that a
model cannot read the label off the channel.

Steps (`STEPS`), each applied with probability ``p``, in this order:

- ``codec``: one codec of `CODECS` at a random quality, encoded and decoded in memory by
  libsndfile (through ``soundfile``; no external program): MP3 (LAME), Opus and Vorbis in Ogg at
  16 kHz; GSM 06.10 full rate, G.721 ADPCM, mu-law and A-law (G.711) in the 8 kHz telephone band
  (resampled down and back with soxr, so nothing above 4 kHz survives);
- ``dropout``: packet loss: 20 ms frames lost independently with a rate drawn in
  `DROPOUT_RATE` (zeroed, as a receiver without loss concealment plays them);
- ``reverb``: a room impulse response simulated by pyroomacoustics (image source method; a
  shoebox room of random size, reverberation time drawn in `RT60_S`, source and microphone
  at random places inside), convolved and brought back to the input's level.

Every draw comes from the ``numpy.random.Generator`` passed in, so a seed gives the same output
(the codecs are deterministic). Output: the input's length and sample rate, float32 in [-1, 1].
Cost per 4 s utterance on one core: docs/speed.md (``python benchmarks/augment.py``).
"""

import io

import numpy as np

# -----------------------------------------------------------------------------
STEPS = ("codec", "dropout", "reverb")
# codec -> (libsndfile format, subtype, sample rate it runs at, quality range: libsndfile's
# compression level, 0 = best .. 1 = smallest, or None when the codec has a single rate). Bit
# rates on 16 kHz noise (speech takes less): MP3 38-23 kbit/s (libsndfile 1.2 refuses level 1
# at 16 kHz), Opus 61-8, Vorbis 55-41
CODECS = {
    "mp3": ("MP3", "MPEG_LAYER_III", 16000, (0.3, 0.95)),
    "opus": ("OGG", "OPUS", 16000, (0.8, 1.0)),
    "vorbis": ("OGG", "VORBIS", 16000, (0.5, 1.0)),
    "gsm": ("WAV", "GSM610", 8000, None),                  # 13 kbit/s, GSM full rate
    "g721": ("WAV", "G721_32", 8000, None),                # 32 kbit/s ADPCM
    "mulaw": ("WAV", "ULAW", 8000, None),                  # G.711, 64 kbit/s
    "alaw": ("WAV", "ALAW", 8000, None),
}
FRAME_S = 0.02              # dropout: one lost packet
DROPOUT_RATE = (0.01, 0.1)  # share of packets lost
RT60_S = (0.2, 0.7)         # reverberation time
ROOM_M = ((3.0, 10.0), (3.0, 8.0), (2.4, 4.0))  # room length, width, height ranges
RIR_MAX_ORDER = 12          # image-source reflections (bounds the cost of long RT60s)
# -----------------------------------------------------------------------------


def check_codecs(codecs):
    """The codecs of a comma-separated string or sequence, checked against `CODECS` and what
    this libsndfile can write; ValueError names the missing one."""
    import soundfile as sf

    names = [c.strip() for c in (codecs.split(",") if isinstance(codecs, str) else codecs)
             if c.strip()]
    for name in names:
        if name not in CODECS:
            raise ValueError(f"unknown codec {name!r}; choose from {', '.join(CODECS)}")
        fmt, subtype, _, _ = CODECS[name]
        if subtype not in sf.available_subtypes(fmt):
            raise ValueError(f"codec {name}: this libsndfile ({sf.__libsndfile_version__}) "
                             f"cannot write {fmt}/{subtype}; soundfile >= 0.12 ships one "
                             "that can")
    if not names:
        raise ValueError("no codec given")
    return tuple(names)


def codec(y, name, rng=None, sr=16000, quality=None):
    """``y`` encoded with codec ``name`` (`CODECS`) and decoded again.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
    name : str
    rng : np.random.Generator, optional
        Draws the quality when ``quality`` is None.
    quality : float in [0, 1], optional
        libsndfile's compression level (0 = best); ignored by single-rate codecs.

    Returns
    -------
    y_coded : np.ndarray, shape (n,), float64
    """
    import librosa
    import soundfile as sf

    fmt, subtype, rate, q_range = CODECS[name]
    x = np.asarray(y, np.float64)
    if rate != sr:
        x = librosa.resample(x, orig_sr=sr, target_sr=rate, res_type="soxr_hq")
    kwargs = {}
    if q_range is not None:
        rng = rng or np.random.default_rng(0)
        kwargs["compression_level"] = float(rng.uniform(*q_range) if quality is None
                                            else quality)
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), rate, format=fmt, subtype=subtype, **kwargs)
    buf.seek(0)
    out, got = sf.read(buf, dtype="float64")
    if got != sr:
        out = librosa.resample(out, orig_sr=got, target_sr=sr, res_type="soxr_hq")
    return fit_length(out, y.size)


def fit_length(y, n):
    """Trim or zero-pad to ``n`` samples (codecs add a few samples of delay or padding)."""
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


def dropout(y, rng, sr=16000, rate=None):
    """Packet loss: each `FRAME_S` frame zeroed with probability ``rate`` (drawn in
    `DROPOUT_RATE` when None). Shape (n,) -> (n,)."""
    frame = max(1, int(round(FRAME_S * sr)))
    rate = rng.uniform(*DROPOUT_RATE) if rate is None else rate
    lost = rng.random(-(-y.size // frame)) < rate
    mask = np.repeat(~lost, frame)[:y.size]
    return y * mask


def room_impulse_response(rng, sr=16000, rt60=None):
    """A simulated room impulse response (pyroomacoustics, image source method; module
    docstring): shape (taps,), float64, peak 1."""
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(*r) for r in ROOM_M])
    rt60 = rng.uniform(*RT60_S) if rt60 is None else rt60
    try:
        absorption, order = pra.inverse_sabine(rt60, dims)
    except ValueError:  # a room too large for that RT60: the least absorbing walls
        absorption, order = 0.05, RIR_MAX_ORDER
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption),
                       max_order=min(order, RIR_MAX_ORDER))
    margin = 0.5
    room.add_source(rng.uniform(margin, dims - margin))
    room.add_microphone(rng.uniform(margin, dims - margin))
    room.compute_rir()
    h = np.asarray(room.rir[0][0], np.float64)
    return h / np.max(np.abs(h))


def reverb(y, rng, sr=16000):
    """``y`` in a random room (`room_impulse_response`), aligned on the direct path and
    brought back to the input's RMS level. Shape (n,) -> (n,)."""
    from scipy.signal import fftconvolve

    h = room_impulse_response(rng, sr)
    start = int(np.argmax(np.abs(h)))  # the direct path: no added delay
    wet = fftconvolve(y, h[start:])[:y.size]
    rms_in, rms_out = np.sqrt(np.mean(y ** 2)), np.sqrt(np.mean(wet ** 2))
    return wet * (rms_in / rms_out) if rms_out > 0 else wet


def channel(y, rng, sr=16000, steps=STEPS, p=0.5, codecs=tuple(CODECS)):
    """One random channel (module docstring).

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Mono waveform, floats in [-1, 1].
    rng : np.random.Generator
    sr : int
    steps : sequence of {"codec", "dropout", "reverb"}
        Applied in `STEPS` order, each with probability ``p``.
    p : float in [0, 1]
    codecs : sequence of str
        The codecs ``codec`` draws from (uniformly).

    Returns
    -------
    y_channel : np.ndarray, shape (n,), float32, in [-1, 1]
    """
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown channel step(s) {unknown}; choose from {', '.join(STEPS)}")
    if not 0 <= p <= 1:
        raise ValueError(f"channel probability must be in [0, 1], got {p}")
    y = np.asarray(y, np.float64)
    if y.ndim != 1 or not np.all(np.isfinite(y)):
        raise ValueError(f"the channel needs a finite mono waveform, got shape {y.shape}")
    n = y.size
    for step in STEPS:  # draws in a fixed order, whatever the order of ``steps``
        hit = rng.random() < p
        if step not in steps or not hit or n == 0:
            continue
        if step == "codec":
            y = codec(y, codecs[int(rng.integers(len(codecs)))], rng, sr)
        elif step == "dropout":
            y = dropout(y, rng, sr)
        else:
            y = reverb(y, rng, sr)
    return np.clip(fit_length(y, n), -1, 1).astype(np.float32)
