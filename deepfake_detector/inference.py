"""Scoring real recordings with a trained run: predict.py and serve.py are its front ends.

Each file is decoded to 16 kHz mono (the run's saved feature parameters decide everything) and
scored in sliding windows of the training window (about 4 s) with a hop of ``hop_seconds``; the
last window is aligned with the end of the file, so nothing is left out. A file shorter than
one window is scored once, repeat-padded exactly as in training. Per file the result gives the
spoof probability of every window, their mean and maximum, and the P(spoof) of the window rule
that decides the label at the decision threshold (`runs.decision_threshold`): the run's own,
else `aggregate.DEFAULT`, 4 consecutive windows at or above the threshold (`aggregate`, measured
on long recordings in docs/recipes.md).

Scores follow ASVspoof: ``score`` = log-odds of bonafide (higher = more bonafide). When the run
holds a calibration (``calibration.json``, ``evaluate.py --calibrate-on``), ``score`` is the
calibrated log-likelihood ratio and P(spoof) the posterior at the calibration's prior of spoof;
the decision threshold moves with it (the same decisions).
"""

from pathlib import Path

import numpy as np

from . import aggregate as A
from . import datasets, display, familiarity, runs
from .evaluation import calibration as C
from .features import AudioError, compute_features, load_audio
from .models import logit_parts, logits_from_hidden, predict_batch_size

# -----------------------------------------------------------------------------
HOP_SECONDS = 2.0  # window hop for long recordings (the window is the training window, ~4 s)
AGGREGATE = A.DEFAULT  # the window rule of runs that do not name their own (`aggregate`)
MIN_SECONDS = 0.1  # shorter recordings are refused
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma",
                    ".aiff", ".aif", ".webm"}
# -----------------------------------------------------------------------------


class Detector:
    """A run's model with its feature parameters and decision threshold.

    Parameters
    ----------
    run_dir : str or Path or runs.Run
        The run folder, or the run already open (`runs.Run`).
    which : {"best", "final"}
    threshold : float, optional
        Decision threshold on P(spoof); default the threshold train.py calibrated on the
        run's validation data for this model (``threshold.json``), else 0.5. It was
        calibrated on one window per utterance: with several windows and ``--aggregate max``,
        a long file is flagged more readily than one window would be.
    """

    SOURCES = {"explicit": "--threshold", "default": "default 0.5 (no threshold saved)"}

    def __init__(self, run_dir, which="best", threshold=None):
        self.run = runs.Run.of(run_dir, which)  # each of the run's files read once
        self._hidden, self._kernel, self._bias = logit_parts(self.model)
        self.batch_size = predict_batch_size(self.meta)  # the family's prediction batch
        self.trained_on, self.warning = runs.training_summary(self.meta)
        # the run's own window rule (a linear probe was measured on the mean), else the default
        try:
            self.aggregate = A.check(self.meta.get("aggregate") or AGGREGATE)
        except ValueError:
            self.aggregate = AGGREGATE
        # the band around the threshold shown as uncertain: the run's own (a probe's P(spoof)
        # is compressed: `probe.UNCERTAIN_MARGIN`), else display.UNCERTAIN_MARGIN
        margin = self.meta.get("uncertain_margin")
        self.uncertain_margin = float(margin) if isinstance(margin, (int, float)) and \
            0 <= margin < 0.5 else display.UNCERTAIN_MARGIN
        # score = -logit + prior_logit: the LLR, when calibrated (`calibration.posterior_logit`)
        self.prior_logit = float(C.posterior_logit(0.0, self.calibration.get(
            "prior_spoof", C.PRIOR_SPOOF))) if self.calibration else 0.0
        saved = self.run.saved_threshold
        if self.calibration:
            saved = C.translate_threshold(saved, self.calibration)
        self.threshold, kind = runs.decision_threshold(threshold, saved)
        self.familiarity, problem = self.run.familiarity
        if problem:
            import sys

            print(f"warning: {problem}", file=sys.stderr)
        self.threshold_source = (f"{runs.saved_threshold_words(saved)}, threshold.json"
                                 if kind == "calibrated" else self.SOURCES[kind])
        # fitted on labelled data: an EER/F1/FAR point of the run's validation part
        self.threshold_calibrated = kind == "calibrated" and runs.is_calibrated(saved)

    # the run's own, read once (`runs.Run`)
    run_dir = property(lambda self: self.run.path)
    model_path = property(lambda self: self.run.model_path)
    meta = property(lambda self: self.run.meta)
    model = property(lambda self: self.run.model)
    features = property(lambda self: self.run.features)
    calibration = property(lambda self: self.run.calibration)

    @property
    def window_samples(self):
        p = self.features
        return p["clip_samples"] if p["fit"] == "window" else None

    def logits(self, mels, with_unfamiliarity=False):
        """Log-odds of spoof for a batch of windows' arrays (`features.compute_features`: mel
        arrays (n, 128, 128), or int16 waveforms (n, 64524)) -> (n,); posterior log-odds at
        the calibration's prior when the run is calibrated. ``with_unfamiliarity``: also each
        window's unfamiliarity (`familiarity`: distance / threshold, (n,); NaN when the run
        has no familiarity fit)."""
        x = datasets.to_model_input(np.asarray(mels), self.run.input_kind)
        # static shapes: a first call 0.5 s faster than `batch_function`'s open batch (AASIST-L,
        # one window); at most `batch_size` shapes are ever traced
        hidden = self._hidden.predict_on_batch(x)
        z = logits_from_hidden(hidden, self._kernel, self._bias)
        if self.calibration is not None:
            z = C.posterior_logit(C.apply_llr(self.calibration, -np.asarray(z, np.float64)),
                                  self.calibration.get("prior_spoof", C.PRIOR_SPOOF))
        if not with_unfamiliarity:
            return z
        if self.familiarity is None:
            return z, np.full(len(z), np.nan)
        return z, familiarity.distances(self.familiarity, hidden) / self.familiarity["threshold"]

    def score(self, logit):
        """The ASVspoof score of a spoof log-odds from `logits`: ``-logit`` (the LLR when the
        run is calibrated)."""
        return float(-logit + self.prior_logit)

    def spectrogram(self, window):
        """What the model saw of one window, as an image (frequency x time): the mel array
        itself; for a waveform model the log-mel its own front end (layer ``log_mel``)
        computes, shape (num_mels, frames); for one without a mel front end (AASIST's sinc
        filters) the project's 128 x 128 log-mel of the same samples."""
        if self.run.input_kind != "waveform":
            return window
        names = {layer.name for layer in self.model.layers}
        if "log_mel" not in names:
            from .features import INT16_SCALE, feature_params

            y = np.asarray(window, np.float32) / INT16_SCALE
            return compute_features(y, feature_params("resize"))
        x = datasets.to_model_input(np.asarray(window)[None], "waveform")
        return np.asarray(self.model.get_layer("log_mel")(x))[0].T

    def identity(self, public=False):
        """What /health and the JSON output say about the model; ``public`` (the API): the run
        folder's name only, never the server's paths."""
        return {"run": self.run_dir.name if public else str(self.run_dir),
                "model": self.model_path.name,
                "threshold": self.threshold, "threshold_source": self.threshold_source,
                "threshold_text": display.format_threshold(self.threshold),
                "threshold_calibrated": self.threshold_calibrated,
                "aggregate": self.aggregate, "rule": A.describe(self.aggregate, A.span(
                    self.aggregate, (self.window_samples or 0) / self.features["sample_rate"],
                    HOP_SECONDS)),
                "score": ("calibrated log-likelihood ratio, bonafide vs spoof; P(spoof) at "
                          f"prior {self.calibration.get('prior_spoof', C.PRIOR_SPOOF):g}"
                          if self.calibration else "log-odds of bonafide (not calibrated)"),
                "trained_on": self.trained_on, "warning": self.warning,
                "familiarity": None if self.familiarity is None else {
                    "threshold": self.familiarity["threshold"],
                    "quantile": self.familiarity["record"].get("quantile"),
                    "fitted_on": [Path(d).name if public else d for d in
                                  self.familiarity["record"].get("data", [])]},
                "features": self.features}


def window_starts(n_samples, window, hop):
    """Start samples of the windows covering ``n_samples``: every ``hop`` from 0, plus one
    aligned with the end when the hop grid leaves a tail. One window (start 0) when the signal
    is not longer than a window.

    Returns
    -------
    starts : list of int
    """
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def open_windows(path, detector, hop_seconds=HOP_SECONDS, max_seconds=None):
    """Decode one file and plan its feature windows.

    Returns
    -------
    info : dict
        duration, sample rate and channels of the file, the window and hop in seconds.
    spans : list of (start_s, end_s)
    mels : iterator of np.ndarray or None
        The windows' arrays (`features.compute_features`: (128, 128) mel, or (64524,) int16
        for a waveform model), computed lazily (None for a silent window, not scored), so
        memory holds the decoded audio and one window, however long the file.

    Raises
    ------
    features.AudioError
        Not a regular file, undecodable, empty, non-finite, too short or too long
        (``max_seconds``, checked before decoding).
    """
    import soundfile as sf

    p = detector.features
    sr = p["sample_rate"]
    y = load_audio(path, sr, max_seconds)  # regular files only; the budget before decoding
    try:
        meta = sf.info(str(path))
        file_sr, channels = meta.samplerate, meta.channels
    except Exception:  # noqa: BLE001 - formats only the fallback decoder reads
        file_sr, channels = None, None
    duration = y.size / sr
    if duration < MIN_SECONDS:
        raise AudioError(f"too short: {duration:.3f} s (at least {MIN_SECONDS} s)", "too_short")
    win = detector.window_samples
    if win is None:  # a "resize" model sees the whole utterance at once
        spans = [(0, y.size)]
    else:
        hop = max(1, int(round(hop_seconds * sr)))
        spans = [(a, min(a + win, y.size)) for a in window_starts(y.size, win, hop)]

    def mels():
        for a, b in spans:
            try:
                yield compute_features(y[a:b], p)
            except AudioError as e:  # a silent window is not scored; anything else is an error
                if e.kind != "silent":
                    raise
                yield None

    info = {"duration_s": round(duration, 3), "sample_rate": file_sr, "channels": channels,
            "window_s": round((win or y.size) / sr, 4), "hop_s": hop_seconds if win else None}
    return info, [(a / sr, b / sr) for a, b in spans], mels()


def summarize(info, spans, logits, detector, aggregate=None, unfamiliarity=None):
    """Per-file result from its window logits (log-odds of spoof; NaN for silent windows), with
    the texts people read about it (``display``, `display.display`); ``unfamiliarity`` per window
    (`Detector.logits`; NaN when unknown) gives the file's, the mean over its scored windows
    (above 1: ``unfamiliar``, the verdict shown as uncertain)."""
    from scipy.special import expit

    scored = ~np.isnan(logits)
    u = np.full(len(logits), np.nan) if unfamiliarity is None else np.asarray(unfamiliarity)
    u_file = float(np.mean(u[scored])) if scored.any() and np.isfinite(u[scored]).all() \
        else None
    p = expit(logits[scored])
    aggregate = A.check(aggregate or detector.aggregate)
    agg, deciding = A.combine(logits, aggregate)
    p_agg = float(expit(agg))
    result = {
        "status": "ok", **info,
        "windows_scored": int(scored.sum()), "windows_silent": int((~scored).sum()),
        "p_spoof_mean": float(np.mean(p)), "p_spoof_max": float(np.max(p)),
        "aggregate": aggregate, "deciding_windows": deciding,
        "p_spoof": p_agg, "score": detector.score(agg),
        "label": "spoof" if p_agg >= detector.threshold else "bonafide",
        "threshold": detector.threshold, "threshold_source": detector.threshold_source,
        "unfamiliarity": u_file, "unfamiliar": None if u_file is None else u_file > 1,
        "windows": [{"start_s": round(a, 3), "end_s": round(b, 3),
                     "p_spoof": None if np.isnan(z) else float(expit(z)),
                     "score": None if np.isnan(z) else detector.score(z),
                     "unfamiliarity": None if np.isnan(z) or not np.isfinite(v) else float(v)}
                    for (a, b), z, v in zip(spans, logits, u)],
    }
    return {**result, "display": display.display(result, detector.uncertain_margin)}


def error_kind(exc):
    """A short, stable name for a per-file failure (`features.AudioError.kind`, else ``memory``,
    ``io`` for OS errors and ``invalid`` for the rest)."""
    if isinstance(exc, AudioError):
        return exc.kind
    if isinstance(exc, MemoryError):
        return "memory"
    return "io" if isinstance(exc, OSError) else "invalid"


def score_files(paths, detector, hop_seconds=HOP_SECONDS, batch_size=None,
                aggregate=None, max_seconds=None, progress=False):
    """Score files, batching windows across files. Yields one result per file, in order.

    Each result has ``file`` and ``status`` ("ok" or "error"); errors carry ``error`` (the
    reason) and ``error_kind`` (`error_kind`), scored files the fields of `summarize`. With
    ``progress``, a progress bar over the files on stderr.
    """
    from tqdm import tqdm

    batch_size = batch_size or detector.batch_size
    paths = tqdm(paths, desc="scoring", unit="file", disable=not progress)
    batch, done = [], []  # batch: (slot, window index, mel); done: slots in input order

    def flush():
        if batch:
            z, u = detector.logits([m for _, _, m in batch], with_unfamiliarity=True)
            for (slot, j, _), zj, uj in zip(batch, z, u):
                slot["logits"][j], slot["unfamiliarity"][j] = zj, uj
            batch.clear()

    def finished(slot):
        if "error" in slot:
            return {"file": slot["file"], "status": "error", "error": slot["error"],
                    "error_kind": slot["error_kind"]}
        return {"file": slot["file"], **summarize(slot["info"], slot["spans"], slot["logits"],
                                                  detector, aggregate, slot["unfamiliarity"])}

    for path in paths:
        slot = {"file": str(path)}
        try:
            info, spans, mels = open_windows(path, detector, hop_seconds, max_seconds)
            slot.update(info=info, spans=spans, logits=np.full(len(spans), np.nan),
                        unfamiliarity=np.full(len(spans), np.nan))
            silent = True
            for j, mel in enumerate(mels):
                if mel is not None:
                    silent = False
                    batch.append((slot, j, mel))
                    if len(batch) >= batch_size:
                        flush()
            if silent:
                raise AudioError("silent: every window is at or below -80 dBFS", "silent")
        except (AudioError, OSError, ValueError, MemoryError) as e:
            slot["error"], slot["error_kind"] = str(e) or type(e).__name__, error_kind(e)
        done.append(slot)
        if not batch:  # every window so far is scored
            yield from (finished(s) for s in done)
            done.clear()
    flush()
    yield from (finished(s) for s in done)


class Busy(RuntimeError):
    """The model stayed busy longer than a caller was willing to wait."""


class FairLock:
    """A lock that serves its waiters in arrival order (first come, first served).

    ``threading.Lock`` is not fair: a thread that releases it and asks again at once (a long
    recording scored batch by batch) mostly wins it back, so a short request could wait for a
    whole long one. Holding this lock per batch, every request waits at most for the batch in
    progress and one batch of each request that queued before it.
    """

    def __init__(self):
        import collections
        import threading

        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._held = False

    def acquire(self, timeout=-1):
        """Wait for the lock (at most ``timeout`` seconds; negative or None: no limit, as
        ``threading.Lock``); True if held."""
        me = object()
        limit = None if timeout is None or timeout < 0 else timeout
        with self._cond:
            self._queue.append(me)
            if self._cond.wait_for(lambda: not self._held and self._queue[0] is me, limit):
                self._queue.popleft()
                self._held = True
                return True
            self._queue.remove(me)
            self._cond.notify_all()  # the next in line may be free to go now
            return False

    def release(self):
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    @property
    def waiting(self):
        """How many callers are waiting for the lock."""
        return len(self._queue)


def analyze(path, detector, hop_seconds=HOP_SECONDS, max_seconds=None):
    """Decode one file and compute the features of every window, without calling the model
    (so a server can do it outside its model lock).

    Returns
    -------
    info, spans :
        As `open_windows`.
    mels : list of np.ndarray or None
        The windows' arrays, as `open_windows` gives them; None for a silent window.

    Raises
    ------
    features.AudioError
        As `open_windows`, and kind ``silent`` when every window is silent.
    """
    info, spans, mels = open_windows(path, detector, hop_seconds, max_seconds)
    mels = list(mels)
    if all(m is None for m in mels):
        raise AudioError("silent: every window is at or below -80 dBFS", "silent")
    return info, spans, mels


def score_one(path, detector, hop_seconds=HOP_SECONDS, aggregate=None, max_seconds=None,
              model_lock=None, timeout=None, batch_size=None):
    """Score one file; decoding and features happen before ``model_lock`` is taken, and the
    model calls take it one batch at a time (`score_windows`).

    Parameters
    ----------
    model_lock : FairLock or threading.Lock, optional
        Held around each batch's model call.
    timeout : float, optional
        Longest wait for ``model_lock`` before the first batch, in seconds; `Busy` after that.

    Returns
    -------
    result : dict
        As one element of `score_files`.
    mels : list
        The windows' features (`analyze`).

    Raises
    ------
    features.AudioError, Busy
    """
    info, spans, mels = analyze(path, detector, hop_seconds, max_seconds)
    result = score_windows(info, spans, mels, detector, aggregate, model_lock, timeout,
                           batch_size)
    return {"file": str(path), **result}, mels


def score_windows(info, spans, mels, detector, aggregate=None, model_lock=None,
                  timeout=None, batch_size=None):
    """The model's verdict on the windows `analyze` made, batch by batch.

    With a ``model_lock``, each batch takes the lock and gives it back, so with a `FairLock`
    a long recording shares the model with the requests that arrive while it is scored
    (each waits for at most the batch in progress and one batch of each request before it).
    ``timeout`` bounds the wait for the first batch (`Busy` after it); once scoring has
    begun, later batches wait their turn without a limit.

    Returns
    -------
    result : dict
        `summarize`'s fields.
    """
    batch_size = batch_size or detector.batch_size
    scored = [j for j, m in enumerate(mels) if m is not None]
    logits, unfamiliarity = np.full(len(spans), np.nan), np.full(len(spans), np.nan)
    for i in range(0, len(scored), batch_size):
        if model_lock is not None:
            wait = max(timeout, 0) if i == 0 and timeout is not None else -1
            if not model_lock.acquire(timeout=wait):
                raise Busy("the model is scoring other recordings; try again")
        try:
            part = scored[i:i + batch_size]
            logits[part], unfamiliarity[part] = detector.logits([mels[j] for j in part],
                                                                with_unfamiliarity=True)
        finally:
            if model_lock is not None:
                model_lock.release()
    return summarize(info, spans, logits, detector, aggregate, unfamiliarity)


def expand_inputs(items):
    """Files as given, and the audio files inside folders (recursively, sorted): every entry
    with an audio extension, so that a broken link or a FIFO there gets its error line
    (`features.load_audio` refuses anything but a regular file) instead of vanishing."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS
                          and not f.is_dir())
        else:
            out.append(p)
    return out


def add_model_args(ap):
    """The --run, --model and --threshold flags of every script that loads a run."""
    ap.add_argument("--run", help="run folder from train.py (default: the newest under runs/)")
    ap.add_argument("--model", choices=tuple(runs.MODEL_FILES), default="best",
                    help="best.keras (best validation --monitor of train.py, by default the "
                         "lowest loss) or model.keras (last epoch)")
    ap.add_argument("--threshold", type=float,
                    help="decision threshold on P(spoof) (default: the threshold train.py "
                         "calibrated on the run's validation data for this model, "
                         "threshold.json; else 0.5)")
