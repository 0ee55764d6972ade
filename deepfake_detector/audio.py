"""Decoding audio files within a budget: any format libsndfile (or librosa's audioread
fallback) reads, any rate and channel count, checked before decoding and bounded while decoding.
`features.load_audio` is the entry point, at the project's sample rate; this module holds the
mechanics and the `AudioError` every per-file failure raises.
"""

import os
from pathlib import Path

import numpy as np

# -----------------------------------------------------------------------------
MIN_RATE, MAX_RATE = 1000, 768_000  # sample rates (Hz) a recording can have
MAX_CHANNELS = 64
UNKNOWN_FRAMES = 1 << 62  # a header frame count at or above this means "length unknown"
READ_BLOCK = 1 << 16  # frames decoded per read
UNKNOWN_BLOCK = 4096  # frames per read of a file of unknown length
# -----------------------------------------------------------------------------


class AudioError(ValueError):
    """A file or waveform that cannot be turned into features.

    Attributes
    ----------
    kind : str
        What went wrong, for programs that react to it (serve.py maps it to an HTTP status):
        ``undecodable``, ``empty``, ``nonfinite``, ``silent``, ``too_short``, ``too_long``,
        ``missing``, ``invalid``.
    """

    def __init__(self, message, kind="undecodable"):
        super().__init__(message)
        self.kind = kind


def _decode_budget(file_sr, channels, frames, max_seconds):
    """Refuse, before decoding, what a header says would cost too much: a duration over
    ``max_seconds`` (kind ``too_long``) or a sample rate or channel count no recording has
    (``undecodable``), which would make resampling explode. A length the header does not know
    (libsndfile's maximum count, e.g. a FLAC written to a pipe, whose STREAMINFO says 0
    samples) is no reason to refuse: decoding stops at the budget anyway (`_read_mono`)."""
    known = 0 <= frames < UNKNOWN_FRAMES
    if max_seconds is not None and known and frames > max_seconds * file_sr:
        raise AudioError(f"too long: {frames / file_sr:.0f} s (at most {max_seconds:.0f} s)",
                         "too_long")
    if not MIN_RATE <= file_sr <= MAX_RATE:
        raise AudioError(f"cannot decode: unsupported sample rate {file_sr} Hz (expected "
                         f"{MIN_RATE}-{MAX_RATE} Hz)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"cannot decode: unsupported channel count {channels}")


def _mono(block):
    """One decoded block (frames, channels) -> its mono signal (frames,): the channels' mean."""
    return block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)


def _read_mono(f, max_frames):
    """Read a `soundfile.SoundFile` block by block into one mono float32 signal (channels
    averaged block by block), at most ``max_frames + 1`` frames whatever the header says, and
    only the frames the decoder returns: a file that ends before its header's length (a
    truncated MP3) gives what it holds, never a repeated block (``SoundFile.blocks`` keeps
    yielding its last buffer when a read comes back short)."""
    n = f.frames if max_frames is None else min(f.frames, max_frames + 1)
    known = 0 <= n <= 1 << 31  # a plausible length: one buffer, the memory of the signal only
    limit = n if known else (None if max_frames is None else max_frames + 1)
    out, total = (np.empty(n, np.float32) if known else []), 0
    while limit is None or total < limit:
        want = READ_BLOCK if limit is None else min(READ_BLOCK, limit - total)
        b = f.read(want, dtype="float32", always_2d=True)
        if len(b):
            mono = _mono(b)
            if known:
                out[total:total + len(mono)] = mono
            else:
                out.append(mono.copy())
            total += len(b)
        if len(b) < want:  # the data ended
            break
    if known:
        return out[:total]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _read_unknown_length(path, max_frames):
    """Decode a file whose header does not know its length (a FLAC written to a pipe), on which
    libsndfile fails with "psf_fseek() failed" instead of returning a short read at the end:
    blocks of `UNKNOWN_BLOCK` frames until that error, then the rest of the last block one
    frame at a time from a fresh handle. The last frame may be lost; nothing is made up."""
    import soundfile as sf

    out, total = [], 0
    for block in (UNKNOWN_BLOCK, 1):
        with sf.SoundFile(os.fsencode(path)) as f:  # bytes: any name the OS allows
            f.seek(total)
            try:
                while max_frames is None or total <= max_frames:
                    b = f.read(block, dtype="float32", always_2d=True)
                    if len(b):
                        out.append(_mono(b).copy())
                        total += len(b)
                    if len(b) < block:
                        return np.concatenate(out) if out else np.zeros(0, np.float32)
            except sf.LibsndfileError:
                continue
        break
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def load_audio(path, sr, max_seconds=None):
    """Decode a file to mono float32 at ``sr``, within a budget.

    Any sample rate and channel count: channels are averaged, the rate converted with soxr.
    libsndfile decodes WAV/FLAC/OGG/MP3; other formats fall back to librosa's audioread backend.
    With ``max_seconds`` the cost is bounded before any work: the header's duration is checked
    first, and decoding stops as soon as more than ``max_seconds`` of audio came, so a file whose
    header lies, or that has none, costs at most that much. Error messages name the file by its
    name only (a caller's temporary folder never leaks).

    Parameters
    ----------
    path : str or Path
    sr : int
    max_seconds : float, optional
        Longest audio accepted.

    Returns
    -------
    y : np.ndarray, shape (n_samples,), float32, finite

    Raises
    ------
    AudioError
        Kind ``missing`` (no such file), ``invalid`` (not a regular file: a folder, a FIFO, a
        device), ``undecodable``, ``too_long``, ``empty`` or ``nonfinite`` (NaN or inf
        samples).
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise (AudioError("not a regular file (a folder, FIFO or device)", "invalid")
               if path.exists() else AudioError("no such file (or a broken link)", "missing"))
    try:
        with sf.SoundFile(os.fsencode(path)) as f:  # bytes: any name the OS allows
            file_sr, unknown = f.samplerate, f.frames >= UNKNOWN_FRAMES
            _decode_budget(file_sr, f.channels, f.frames, max_seconds)
            budget = None if max_seconds is None else int(max_seconds * file_sr)
            try:
                y = _read_mono(f, budget)
            except sf.LibsndfileError:
                if not unknown:
                    raise
                y = _read_unknown_length(path, budget)
    except sf.LibsndfileError as e:
        msg = str(e).replace(str(path), path.name)
        if path.suffix.lower() in (".flac", ".wav", ".ogg", ".mp3"):
            raise AudioError(f"cannot decode: {msg}") from None
        try:
            import librosa

            y, file_sr = librosa.load(str(path), sr=None, mono=True,
                                      duration=None if max_seconds is None else max_seconds + 1)
        except Exception as e2:  # audioread raises several unrelated types
            why = str(e2).replace(str(path), path.name).strip() or type(e2).__name__
            # libsndfile says "Error opening b'NAME': REASON": the reason is what a person needs
            raise AudioError(f"cannot decode: not an audio format this program reads "
                             f"(libsndfile: {msg.rsplit(': ', 1)[-1].strip()}; ffmpeg/audioread: "
                             f"{why})") from None
        _decode_budget(file_sr, 1, 0, None)
    if max_seconds is not None and y.size > max_seconds * file_sr:
        raise AudioError(f"too long: more than {max_seconds:.0f} s", "too_long")
    if y.size == 0:
        raise AudioError("empty: no audio samples", "empty")
    if not np.isfinite(y).all():
        raise AudioError("audio contains NaN or inf samples", "nonfinite")
    if file_sr != sr:
        import librosa

        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)
