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


def write_json_atomic(path, obj):
    """Write ``obj`` as indented, strict JSON (`json_safe`), atomically."""
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
