"""Turn ASVspoof-style audio listed in a protocol file into normalized log-mel arrays.

Each utterance becomes one float32 array of shape (128, 128) -- (n_mels, n_frames) -- with values
in [0, 1], saved as ``<out>/<utterance_id>.npy``. Beside the arrays:

- ``features.json``: the feature parameters (the single source of truth; train.py copies them into
  every saved model and evaluate.py refuses data computed differently),
- ``manifest.csv``: utt_id, path, label, target, attack, speaker, split, audio (the source
  file, read again only by train.py's waveform augmentation),
- ``errors.csv``: files that could not be turned into features and why,
- ``missing.txt``: protocol entries whose audio file is not on disk.

Examples
--------
ASVspoof 2019 LA as downloaded::

    python preprocess.py --dataset-root data/LA --split train --out data/features/train

Any protocol format (2019, 2021 LA/DF keys, ASVspoof 5 TSV, generic ``file,label`` CSV)::

    python preprocess.py --protocol keys/LA/CM/trial_metadata.txt \
        --audio-dir ASVspoof2021_LA_eval/flac --out data/features/la21_eval

Re-running resumes: finished arrays are kept. ``--overwrite`` recomputes everything.
"""

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

# -----------------------------------------------------------------------------
# Feature parameters: the one source of truth. A 4 s window at 16 kHz framed so that it gives
# exactly N_FRAMES frames: clip_samples = n_fft + (n_frames - 1) * hop (no centre padding).
SAMPLE_RATE = 16000
N_FFT = 1024  # 64 ms Hann window; 513 bins leave no empty mel filter at 128 mels
HOP_LENGTH = 500  # 31.25 ms
N_MELS = 128
N_FRAMES = 128
FMIN, FMAX = 0.0, SAMPLE_RATE / 2
TOP_DB = 80.0  # dynamic range kept below each utterance's peak, mapped to [0, 1]
SILENCE_PEAK = 1e-4  # peak amplitude (-80 dBFS) at or below which a file is "silent"
CLIP_SAMPLES = N_FFT + (N_FRAMES - 1) * HOP_LENGTH  # 64,524 samples = 4.03 s
FEATURE_VERSION = 1

DEFAULT_DATASET_ROOT = "data/LA"
DEFAULT_FEATURES_DIR = "data/features"
LABELS = ("bonafide", "spoof")  # target 0 = bonafide, 1 = spoof (model output = P(spoof))
FORMATS = ("asvspoof2019", "asvspoof2021", "asvspoof5", "csv")
# -----------------------------------------------------------------------------


def feature_params(fit="window"):
    """The feature parameters as a JSON-serializable dict.

    Parameters
    ----------
    fit : {"window", "resize"}
        ``"window"`` (default) takes a fixed ~4 s window (repeat-padding short utterances, keeping
        the first ``clip_samples`` of long ones). ``"resize"`` computes the mel-spectrogram of the
        whole utterance and linearly resamples its time axis to ``n_frames`` frames.

    Returns
    -------
    params : dict
        Everything that determines the arrays; compared key by key by evaluate.py.
    """
    if fit not in ("window", "resize"):
        raise ValueError(f"fit must be 'window' or 'resize', got {fit!r}")
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
        "shape": [N_MELS, N_FRAMES],
        "dtype": "float32",
    }


class AudioError(ValueError):
    """Raised when a file cannot be turned into features (unreadable, empty, silent, ...)."""


class ProtocolError(ValueError):
    """Raised for a protocol file that cannot be parsed."""


# ----------------------------------------------------------------------------- protocols

_BONAFIDE_WORDS = {"bonafide", "bona-fide", "bona_fide", "bona fide", "genuine", "real"}
_SPOOF_WORDS = {"spoof", "fake", "deepfake", "spoofed"}


def normalize_label(word, where=""):
    """Map a protocol's key word to ``"bonafide"`` or ``"spoof"``.

    Accepts the spellings used by ASVspoof (``bonafide``/``spoof``), In-the-Wild (``bona-fide``)
    and common CSVs (``real``/``fake``, ``genuine``), case-insensitively.
    """
    w = str(word).strip().lower()
    if w in _BONAFIDE_WORDS:
        return "bonafide"
    if w in _SPOOF_WORDS:
        return "spoof"
    raise ProtocolError(f"{where}unknown label {word!r}: expected bonafide or spoof")


# (key column, attack column, speaker column, utterance column) for whitespace protocols
_COLUMNS = {
    # LA_0079 LA_T_1004644 - A01 spoof
    "asvspoof2019": dict(n_min=5, n_max=5, key=4, attack=3, speaker=0, utt=1),
    # LA:  LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval
    # DF:  LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -
    "asvspoof2021": dict(n_min=6, n_max=13, key=5, attack=4, speaker=0, utt=1),
    # SPEAKER FLAC_FILE GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP
    "asvspoof5": dict(n_min=9, n_max=10, key=8, attack=7, speaker=0, utt=1),
}


def detect_format(path):
    """Guess a protocol file's format from its first non-empty line.

    Returns
    -------
    fmt : str
        One of ``"asvspoof2019"``, ``"asvspoof2021"``, ``"asvspoof5"``, ``"csv"``.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), None)
    if first is None:
        raise ProtocolError(f"{path}: protocol file is empty")
    if "," in first:
        return "csv"
    cols = first.split()
    keys = [i for i, c in enumerate(cols) if c.lower() in ("bonafide", "spoof")]
    if len(cols) == 5 and 4 in keys:
        return "asvspoof2019"
    if len(cols) >= 6 and 5 in keys and len(cols) != 10:
        return "asvspoof2021"
    if len(cols) in (9, 10) and 8 in keys:
        return "asvspoof5"
    raise ProtocolError(
        f"{path}: cannot tell the protocol format from its first line {first.strip()!r}; "
        f"pass --format ({'|'.join(FORMATS)})"
    )


def parse_protocol(path, fmt=None):
    """Read a protocol file into a table of utterances.

    Parameters
    ----------
    path : str or Path
        ASVspoof 2019 LA/PA protocol, ASVspoof 2021 LA/DF key (``trial_metadata.txt``), ASVspoof 5
        TSV, or a CSV with a header containing ``file`` and ``label`` (optional ``speaker``,
        ``attack``); CSV paths are relative to the audio folder or absolute.
    fmt : str, optional
        One of ``FORMATS``; detected from the first line when omitted.

    Returns
    -------
    df : pandas.DataFrame
        Columns ``utt_id, file, label, attack, speaker`` (``file`` is None for ASVspoof formats,
        whose audio is ``<audio_dir>/<utt_id>.flac``). ``attack`` is ``"-"`` for bonafide.
    """
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"{path}: protocol file not found")
    fmt = fmt or detect_format(path)
    if fmt == "csv":
        df = _parse_csv(path)
    elif fmt in _COLUMNS:
        df = _parse_whitespace(path, fmt)
    else:
        raise ProtocolError(f"unknown protocol format {fmt!r}; expected one of {FORMATS}")
    if df.empty:
        raise ProtocolError(f"{path}: no utterances listed")
    dup = df["utt_id"][df["utt_id"].duplicated()]
    if len(dup):
        raise ProtocolError(f"{path}: utterance ids listed more than once, e.g. {dup.iloc[0]!r}")
    return df


def iter_columns(path):
    """Yield ``(lineno, columns, line)`` for each non-blank line of a whitespace-separated text
    file (protocols, score files), so errors can name the file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cols = line.split()
            if cols:
                yield lineno, cols, line.strip()


def _parse_whitespace(path, fmt):
    spec = _COLUMNS[fmt]
    rows = []
    for lineno, cols, line in iter_columns(path):
        where = f"{path}:{lineno}: "
        if not spec["n_min"] <= len(cols) <= spec["n_max"]:
            raise ProtocolError(f"{where}expected {spec['n_min']}-{spec['n_max']} columns for "
                                f"{fmt}, got {len(cols)}: {line!r}")
        label = normalize_label(cols[spec["key"]], where)
        attack = cols[spec["attack"]]
        if label == "bonafide" or attack.lower() == "bonafide":
            attack = "-"
        rows.append((cols[spec["utt"]], None, label, attack, cols[spec["speaker"]]))
    return pd.DataFrame(rows, columns=["utt_id", "file", "label", "attack", "speaker"])


def _parse_csv(path):
    df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    df.columns = [c.strip().lower() for c in df.columns]
    for col in ("file", "label"):
        if col not in df.columns:
            raise ProtocolError(f"{path}: CSV needs a header with 'file' and 'label' columns, "
                                f"got {list(df.columns)}")
    labels = [normalize_label(w, f"{path}:{i + 2}: ") for i, w in enumerate(df["label"])]
    files = df["file"].str.strip()
    stems = files.map(lambda f: Path(f).with_suffix("").name)
    # utterance id = file stem, or the relative path when stems collide across folders
    if stems.duplicated().any():
        ids = files.map(lambda f: str(Path(f).with_suffix("")).strip("/").replace("/", "__"))
    else:
        ids = stems
    # attack: "-" for bonafide; a spoof without a named attack is attributed to "spoof"
    attack = df["attack"] if "attack" in df.columns else [""] * len(df)
    attack = ["-" if lab == "bonafide" else (a if a not in ("", "-") else "spoof")
              for a, lab in zip(attack, labels)]
    speaker = df["speaker"] if "speaker" in df.columns else pd.Series(["-"] * len(df))
    return pd.DataFrame({"utt_id": ids, "file": files, "label": labels,
                         "attack": attack, "speaker": list(speaker)})


def resolve_2019_layout(root, split):
    """Find the protocol and audio folder of one split of the ASVspoof 2019 layout.

    Parameters
    ----------
    root : str or Path
        The ``LA`` (or ``PA``) folder as unpacked, or its parent.
    split : {"train", "dev", "eval"}

    Returns
    -------
    protocol, audio_dir : Path
    """
    root = Path(root)
    kind = "trn" if split == "train" else "trl"
    tried = []
    for base in (root, root / "LA", root / "PA"):
        for track in ("LA", "PA"):
            protocol = (base / f"ASVspoof2019_{track}_cm_protocols"
                        / f"ASVspoof2019.{track}.cm.{split}.{kind}.txt")
            audio = base / f"ASVspoof2019_{track}_{split}" / "flac"
            tried.append(str(protocol))
            if protocol.is_file():
                if not audio.is_dir():
                    raise FileNotFoundError(
                        f"found {protocol} but not its audio folder {audio}; "
                        "unpack ASVspoof2019_{track}_{split}.zip there (see data/README.md)")
                return protocol, audio
    raise FileNotFoundError(
        f"no ASVspoof 2019 {split} protocol under {root}; looked for:\n  " + "\n  ".join(tried)
        + "\nsee data/README.md for the expected layout, or pass --protocol and --audio-dir")


def audio_path(row, audio_dir):
    """The audio file of one protocol row: ``file`` if given, else ``<audio_dir>/<utt_id>.flac``
    (or ``.wav`` when only that exists)."""
    audio_dir = Path(audio_dir)
    if row["file"]:
        p = Path(row["file"])
        return p if p.is_absolute() else audio_dir / p
    flac = audio_dir / f"{row['utt_id']}.flac"
    if not flac.exists():
        wav = audio_dir / f"{row['utt_id']}.wav"
        if wav.exists():
            return wav
    return flac


# ----------------------------------------------------------------------------- features


def load_audio(path, sr=SAMPLE_RATE):
    """Decode a file to mono float32 at ``sr``.

    Any sample rate and channel count: channels are averaged, the rate converted with soxr.
    libsndfile decodes WAV/FLAC/OGG/MP3; other formats fall back to librosa's audioread backend.

    Returns
    -------
    y : np.ndarray, shape (n_samples,), float32

    Raises
    ------
    AudioError
        When the file cannot be decoded or holds no samples.
    """
    import soundfile as sf

    path = Path(path)
    try:
        with sf.SoundFile(str(path)) as f:
            file_sr = f.samplerate
            if f.channels == 1:
                y = f.read(dtype="float32")
            else:  # channels averaged block by block: memory of the mono signal only
                y = [b.mean(axis=1) for b in f.blocks(blocksize=1 << 18, dtype="float32",
                                                      always_2d=True)]
                y = np.concatenate(y) if y else np.zeros(0, np.float32)
    except sf.LibsndfileError as e:
        if path.suffix.lower() in (".flac", ".wav", ".ogg", ".mp3"):
            raise AudioError(f"cannot decode: {e}") from None
        try:
            import librosa

            y, file_sr = librosa.load(str(path), sr=None, mono=True)
        except Exception as e2:  # audioread raises several unrelated types
            raise AudioError(f"cannot decode: {e}; fallback decoder: {e2}") from None
    if y.size == 0:
        raise AudioError("empty: no audio samples")
    if file_sr != sr:
        import librosa

        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


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
        raise AudioError("empty: no audio samples")
    if y.size >= n_samples:
        return y[:n_samples]
    reps = -(-n_samples // y.size)
    return np.tile(y, reps)[:n_samples]


@functools.lru_cache(maxsize=8)
def mel_filterbank(sr, n_fft, n_mels, fmin, fmax):
    """librosa's Slaney-normalized mel filterbank, shape (n_mels, 1 + n_fft // 2), float64,
    computed once per parameter set."""
    import librosa

    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                dtype=np.float64)
    basis.setflags(write=False)
    return basis


def compute_features(y, params=None):
    """Normalized log-mel spectrogram of one mono waveform at ``params["sample_rate"]``.

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
        its maximum, floored at ``-top_db``.

    Raises
    ------
    AudioError
        Empty, non-finite or silent input.
    """
    import librosa

    p = params or feature_params()
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (n_samples,), got shape {y.shape}")
    if y.size == 0:
        raise AudioError("empty: no audio samples")
    if not np.isfinite(y).all():
        raise AudioError("audio contains NaN or inf samples")
    peak = float(np.max(np.abs(y)))
    if peak <= p["silence_peak"]:
        db = 20 * np.log10(peak) if peak > 0 else -np.inf
        raise AudioError(f"silent: peak {db:.1f} dBFS is at or below "
                         f"{20 * np.log10(p['silence_peak']):.0f} dBFS")
    if p["fit"] == "window":
        y = fit_length(y, p["clip_samples"])
    elif y.size < p["n_fft"]:
        y = fit_length(y, p["n_fft"])
    # = librosa.feature.melspectrogram, with the filterbank cached and a BLAS product (3x faster)
    spec = np.abs(librosa.stft(y, n_fft=p["n_fft"], hop_length=p["hop_length"],
                               win_length=p["win_length"], window=p["window"],
                               center=p["center"])) ** p["power"]
    # float64 product: the result does not depend on how many BLAS threads sum it
    basis = mel_filterbank(p["sample_rate"], p["n_fft"], p["n_mels"], p["fmin"], p["fmax"])
    mel = (basis @ spec.astype(np.float64)).astype(np.float32)
    if p["fit"] == "resize" and mel.shape[1] != p["n_frames"]:
        src = np.linspace(0.0, 1.0, mel.shape[1])
        dst = np.linspace(0.0, 1.0, p["n_frames"])
        mel = np.stack([np.interp(dst, src, row) for row in mel])
    db = librosa.power_to_db(mel, ref=np.max, top_db=p["top_db"])
    out = np.clip((db + p["top_db"]) / p["top_db"], 0.0, 1.0).astype(np.float32)
    expected = tuple(p["shape"])
    if out.shape != expected:  # a parameter set that does not give the promised shape
        raise ValueError(f"feature shape {out.shape} != {expected}; check the feature parameters")
    return out


@contextlib.contextmanager
def atomic_output(path, suffix=".tmp"):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (atomic on
    one filesystem), on any error or interruption it is removed. Readers never see a partial
    file.

    Parameters
    ----------
    path : str or Path
        The final file.
    suffix : str
        Suffix of the temporary file (some writers, e.g. Keras, insist on one).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npy_atomic(path, array):
    """Write ``array`` to ``path`` atomically (see `atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_text_atomic(path, text):
    """Write a text file atomically (see `atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


_PARAMS = None  # feature parameters of a pool worker (sent once, by `_init_worker`)


def _init_worker(params):
    """Pool initializer: the feature parameters, and one BLAS/OpenMP thread per worker process
    (no oversubscription)."""
    from threadpoolctl import threadpool_limits

    global _PARAMS
    _PARAMS = params
    threadpool_limits(1)


def process_file(task, params=None):
    """Worker: features of one file, written atomically. Never raises for bad audio.

    Parameters
    ----------
    task : tuple (utt_id, audio_path, out_path)
    params : dict, optional
        Feature parameters; default those given to `_init_worker`.

    Returns
    -------
    (utt_id, status, reason) : status is ``"written"`` or ``"failed"``
    """
    utt_id, src, dst = task
    params = params or _PARAMS
    try:
        y = load_audio(src, params["sample_rate"])
        save_npy_atomic(dst, compute_features(y, params))
        return utt_id, "written", ""
    except (AudioError, OSError, ValueError) as e:
        return utt_id, "failed", str(e)


# ----------------------------------------------------------------------------- the run


def check_features_json(out_dir, params, overwrite):
    """Refuse to mix arrays computed with different parameters in one folder."""
    fj = Path(out_dir) / "features.json"
    if fj.exists() and not overwrite:
        old = json.loads(fj.read_text())
        diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        if diff:
            raise SystemExit(
                f"error: {out_dir} holds arrays computed with other feature parameters "
                f"(differ in: {', '.join(diff)}); use --overwrite or another --out")


def preprocess(protocol, audio_dir, out_dir, fmt=None, split="", workers=None, fit="window",
               overwrite=False, strict=False, limit=None, progress=True):
    """Compute features for every utterance of a protocol; resumable.

    Parameters
    ----------
    protocol, audio_dir, out_dir : str or Path
    fmt : str, optional
        Protocol format; detected when omitted.
    split : str
        Recorded in the manifest's ``split`` column (e.g. ``"train"``).
    workers : int, optional
        Processes to use; default all cores. 1 runs in this process.
    fit : {"window", "resize"}
    overwrite : bool
        Recompute arrays that already exist.
    strict : bool
        Stop (before any work) when the protocol lists audio files that are missing.
    limit : int, optional
        Only the first ``limit`` protocol entries (for quick trials).

    Returns
    -------
    summary : dict
        Counts ``written``, ``kept``, ``failed``, ``missing``, per label, and the output paths.
    """
    out_dir = Path(out_dir)
    params = feature_params(fit)
    df = parse_protocol(protocol, fmt)
    if limit:
        df = df.iloc[:limit]
    df = df.assign(src=[str(audio_path(r, audio_dir)) for r in df.to_dict("records")])
    exists = df["src"].map(os.path.exists)
    missing = df[~exists]
    if strict and len(missing):
        raise SystemExit(f"error: {len(missing)} audio files listed in {protocol} are missing, "
                         f"e.g. {missing['src'].iloc[0]} (drop --strict to skip them)")
    out_dir.mkdir(parents=True, exist_ok=True)
    check_features_json(out_dir, params, overwrite)
    write_text_atomic(out_dir / "features.json", json.dumps(params, indent=2) + "\n")

    df = df[exists].copy()
    df["path"] = df["utt_id"] + ".npy"
    done = df["path"].map(lambda p: (out_dir / p).exists()) & (not overwrite)
    todo = df[~done]
    tasks = [(u, s, str(out_dir / p)) for u, s, p in zip(todo["utt_id"], todo["src"],
                                                          todo["path"])]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    results = []
    bar = tqdm(total=len(tasks), desc=f"preprocess {split or Path(protocol).name}",
               unit="file", disable=not progress)
    if workers == 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # one worker = one core, as each pool worker below
            for t in tasks:
                results.append(process_file(t, params))
                bar.update()
    else:
        # forkserver: workers start from a clean process, safe even if TensorFlow is loaded here
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "soundfile", "librosa", "preprocess"])
        chunk = max(4, min(64, len(tasks) // (8 * workers)))
        with ctx.Pool(workers, initializer=_init_worker, initargs=(params,)) as pool:
            for r in pool.imap_unordered(process_file, tasks, chunksize=chunk):
                results.append(r)
                bar.update()
    bar.close()

    failed = {u: reason for u, status, reason in results if status == "failed"}
    ok = df[~df["utt_id"].isin(failed)]
    # a file that failed earlier and has no array now is still a failure: keep it out
    ok = ok[ok["path"].map(lambda p: (out_dir / p).exists())]
    manifest = pd.DataFrame({
        "utt_id": ok["utt_id"], "path": ok["path"], "label": ok["label"],
        "target": (ok["label"] == "spoof").astype(int), "attack": ok["attack"],
        "speaker": ok["speaker"], "split": split,
        "audio": [str(Path(f).resolve()) for f in ok["src"]],  # for train.py's augmentation
    })
    write_text_atomic(out_dir / "manifest.csv", manifest.to_csv(index=False))
    err = df[df["utt_id"].isin(failed)]
    err_table = pd.DataFrame({"utt_id": err["utt_id"], "file": err["src"], "label": err["label"],
                              "reason": err["utt_id"].map(failed)})
    write_text_atomic(out_dir / "errors.csv", err_table.to_csv(index=False))
    write_text_atomic(out_dir / "missing.txt", "".join(f"{s}\n" for s in missing["src"]))

    def per_label(frame):
        return {lab: int((frame["label"] == lab).sum()) for lab in LABELS}

    return {
        "out_dir": str(out_dir),
        "listed": int(len(df) + len(missing)),
        "written": sum(1 for _, s, _ in results if s == "written"),
        "kept": int(done.sum()),
        "failed": len(failed),
        "missing": int(len(missing)),
        "in_manifest": int(len(manifest)),
        "per_label": {"manifest": per_label(manifest), "failed": per_label(err),
                      "missing": per_label(missing)},
    }


def print_summary(s, file=sys.stdout):
    """Print a preprocessing summary (from `preprocess`)."""
    pl = s["per_label"]
    print(f"\n{s['out_dir']}: {s['listed']} listed -> {s['in_manifest']} arrays in manifest.csv "
          f"({s['written']} written now, {s['kept']} kept from an earlier run)", file=file)
    print(f"  {'':10s} {'bonafide':>9s} {'spoof':>9s}", file=file)
    for name in ("manifest", "failed", "missing"):
        print(f"  {name:10s} {pl[name]['bonafide']:9d} {pl[name]['spoof']:9d}", file=file)
    if s["failed"]:
        print(f"  {s['failed']} files failed: reasons in {s['out_dir']}/errors.csv", file=file)
    if s["missing"]:
        print(f"  {s['missing']} listed files are not on disk: list in {s['out_dir']}/missing.txt",
              file=file)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="ASVspoof protocol + audio -> 128x128 normalized log-mel .npy arrays, "
                    "features.json and manifest.csv. Re-running resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--dataset-root", default=DEFAULT_DATASET_ROOT,
                    help="ASVspoof 2019 LA/PA folder (holding ASVspoof2019_LA_cm_protocols/ and "
                         "ASVspoof2019_LA_<split>/flac/); used unless --protocol is given")
    ap.add_argument("--split", choices=("train", "dev", "eval"),
                    help="which 2019 partition to process with --dataset-root (default train); "
                         "recorded in the manifest's split column")
    ap.add_argument("--protocol", help="protocol/key file of any supported format (overrides "
                                       "--dataset-root)")
    ap.add_argument("--audio-dir", help="folder of the audio files listed in --protocol "
                                        "(CSV paths are relative to it)")
    ap.add_argument("--format", choices=FORMATS, help="protocol format (default: detected from "
                                                      "the first line)")
    ap.add_argument("--out", help="output folder (default: data/features/<split>)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="worker processes (1 = no subprocesses)")
    ap.add_argument("--fit", choices=("window", "resize"), default="window",
                    help="'window': fixed 4 s window, repeat-pad short, keep the start of long "
                         "utterances; 'resize': whole utterance resampled to 128 frames")
    ap.add_argument("--overwrite", action="store_true", help="recompute existing arrays")
    ap.add_argument("--strict", action="store_true",
                    help="stop if any listed audio file is missing (default: skip and list them)")
    ap.add_argument("--limit", type=int, help="only the first N protocol entries")
    args = ap.parse_args(argv)

    if args.protocol:
        if not args.audio_dir:
            ap.error("--protocol needs --audio-dir")
        protocol, audio_dir = Path(args.protocol), Path(args.audio_dir)
        split = args.split or protocol.stem
    else:
        split = args.split or "train"
        try:
            protocol, audio_dir = resolve_2019_layout(args.dataset_root, split)
        except FileNotFoundError as e:
            raise SystemExit(f"error: {e}") from None
    if not audio_dir.is_dir():
        raise SystemExit(f"error: audio folder {audio_dir} does not exist")
    out = Path(args.out or Path(DEFAULT_FEATURES_DIR) / split)
    if args.workers is not None and args.workers < 1:
        ap.error("--workers must be at least 1")
    try:
        summary = preprocess(protocol, audio_dir, out, fmt=args.format, split=split,
                             workers=args.workers, fit=args.fit, overwrite=args.overwrite,
                             strict=args.strict, limit=args.limit)
    except ProtocolError as e:
        raise SystemExit(f"error: {e}") from None
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main()
