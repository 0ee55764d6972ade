"""Atomic file writes: a reader never sees a half-written file, an interrupted writer leaves
none behind.

Every file the project writes that another step reads (arrays, manifests, run files, models)
goes through `atomic_output`: the content is written to a temporary file beside the target and
renamed onto it only when complete (rename is atomic on one filesystem).
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


TEMP_MARK = ".tmp-"  # in the name of every temporary file atomic_output makes


@contextlib.contextmanager
def atomic_output(path, suffix=".tmp", fsync=True):
    """Yield a temporary path beside ``path``; on success it is flushed to disk (fsync) and
    renamed onto ``path`` (atomic on one filesystem), and the folder entry flushed too; on any
    error or interruption it is removed. Readers never see a partial file, and after a power cut
    the file is either the old or the new one. For writers that open the file by name (Keras,
    soundfile); `atomic_file` hands out the open file instead, one open and close fewer.

    Parameters
    ----------
    path : str or Path
        The final file.
    suffix : str
        Suffix of the temporary file (some writers, e.g. Keras, insist on one).
    fsync : bool
        Flush to disk before the rename. Writers of many small files that are checked when
        read again (preprocess.py's arrays) skip it: it would cost more than the work.
    """
    path = Path(path)
    fd, tmp = _temporary(path, suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        if fsync:
            _fsync(tmp)
        _commit(tmp, path, fsync)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path, mode="wb", fsync=True, **open_kwargs):
    """Like `atomic_output`, but yield the temporary file already open (``open(fd, mode)``
    on the descriptor that created it): preprocess.py writes thousands of small arrays, and
    opening each one again by name, with the truncation that makes ext4 start writing it
    back on close, cost about a tenth of a millisecond per file.

    Parameters
    ----------
    path : str or Path
    mode : str
        A write mode of `open` (``"wb"``, ``"w"``).
    fsync : bool
        As in `atomic_output`.
    **open_kwargs
        Passed to `open` (e.g. ``encoding``).
    """
    path = Path(path)
    fd, tmp = _temporary(path, ".tmp")
    try:
        with open(fd, mode, **open_kwargs) as f:
            os.fchmod(fd, 0o644)
            yield f
            if fsync:
                f.flush()
                os.fsync(fd)
        _commit(tmp, path, fsync)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _temporary(path, suffix):
    """A new, empty temporary file beside ``path`` (its descriptor and name)."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}", suffix=suffix)


def _commit(tmp, path, fsync):
    """Rename the finished temporary file onto ``path``; flush the folder entry too."""
    os.replace(tmp, path)
    if fsync:
        _fsync(path.parent)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_orphans(folder):
    """Remove the temporary files of `atomic_output` that a killed writer left in ``folder``
    (call it while holding the folder's `exclusive` lock). Returns how many."""
    n = 0
    for p in Path(folder).glob(f".*{TEMP_MARK}*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


@contextlib.contextmanager
def exclusive(folder, what="this folder"):
    """Hold an exclusive lock on ``<folder>/.lock`` while writing into it, so two processes
    never write one folder at once (the second stops with a clear error instead), and remove
    the orphan temporary files of earlier, killed writers (`remove_orphans`)."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"another process is writing {what} ({folder}); wait for it "
                                  "to finish") from None
        remove_orphans(folder)
        yield folder


def sha256(*paths):
    """Hex sha256 of a file, or of several files joined in order (a model split in parts)."""
    import hashlib

    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def save_npy_atomic(path, array, fsync=True):
    """Write ``array`` to ``path`` atomically (see `atomic_output`)."""
    with atomic_file(path, "wb", fsync=fsync) as f:
        np.save(f, array, allow_pickle=False)


def write_text_atomic(path, text):
    """Write a text file atomically (see `atomic_output`)."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def json_safe(obj):
    """``obj`` with numpy scalars made native and non-finite floats made None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_csv_atomic(path, df):
    """Write a pandas table as CSV (no index), atomically."""
    write_text_atomic(path, df.to_csv(index=False))


def write_json_atomic(path, obj):
    """Write ``obj`` as indented, strict JSON (`json_safe`), atomically."""
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
