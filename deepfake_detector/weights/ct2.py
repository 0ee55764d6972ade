"""Read a CTranslate2 model file (``model.bin``, as faster-whisper uses) without CTranslate2.

The layout (CTranslate2's ``ModelSpec._serialize``, binary versions 5 and 6; little-endian;
a string is a uint16 length counting a final NUL, the UTF-8 bytes, then the NUL):

    uint32 binary version | string spec name | uint32 spec revision | uint32 variable count
    per variable: string name | uint8 rank | uint32 dims[rank] | uint8 dtype | uint32 bytes | data
    uint32 alias count | per alias: string alias | string variable name

dtype ids follow CTranslate2's ``DataType`` enum: 0 float32, 1 int8, 2 int16, 3 int32,
4 float16, 5 bfloat16. Every size is checked against the file before anything is read, so a
damaged or hostile file costs at most its own size in memory and fails with one line.
"""

import math
import struct
from pathlib import Path

import numpy as np

from ..cli import printable

# -----------------------------------------------------------------------------
VERSIONS = (5, 6)  # binary versions with this layout (CTranslate2 >= 2.x .. 4.x)
DTYPES = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2", 5: "bfloat16"}
MAX_VARIABLES = 100_000
MAX_RANK = 8
MAX_BYTES = 8 << 30  # a large-v3 float32 model is ~6 GB
# -----------------------------------------------------------------------------


class CT2FormatError(ValueError):
    """A file that is not a readable CTranslate2 model (the message says why in one line)."""

    def __init__(self, message):
        super().__init__(printable(message))  # names read from the file may hold anything


class _Reader:
    """Bounded little-endian reads from the bytes of one file."""

    def __init__(self, data, source):
        self.data, self.pos, self.source = memoryview(data), 0, source

    def take(self, n, what):
        if n < 0 or self.pos + n > len(self.data):
            raise CT2FormatError(f"{self.source}: truncated file: {what} needs {n} bytes at "
                                 f"offset {self.pos}, the file has {len(self.data)}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, fmt, what):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what):
        n = self.uint("H", what)
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.source}: damaged file: {what} at offset {self.pos} "
                                 "is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise CT2FormatError(f"{self.source}: damaged file: {what} is not UTF-8") from None


def _array(raw, dims, dtype_id, name, source):
    """The variable's bytes as an array of its shape (bfloat16 widened to float32)."""
    if dtype_id not in DTYPES:
        raise CT2FormatError(f"{source}: variable {name} has unknown dtype id {dtype_id}")
    dtype = DTYPES[dtype_id]
    item = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    count = math.prod(dims)  # Python ints: a product of large dims cannot wrap to 0
    if count * item != len(raw):
        raise CT2FormatError(f"{source}: variable {name}: shape {tuple(dims)} x {item} bytes "
                             f"does not match its {len(raw)} bytes")
    if dtype == "bfloat16":  # the high half of a float32
        wide = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return wide.view(np.float32).reshape(dims)
    return np.frombuffer(raw, dtype).reshape(dims)  # a read-only view: no second copy


def read_model_bin(path):
    """The variables of a CTranslate2 ``model.bin``.

    Parameters
    ----------
    path : str or Path, or list of them
        The file (a faster-whisper model folder's ``model.bin``), or the parts of one split
        into several files (``model.bin.part1``, ``model.bin.part2``, ...), joined in order.

    Returns
    -------
    spec : str
        The model specification's name, e.g. ``"WhisperSpec"``.
    revision : int
        Its revision.
    variables : dict of str -> np.ndarray
        In file order; read-only views on the file's bytes (read once; a large model is not
        held twice); float16 stays float16 (bfloat16 becomes a float32 copy); aliases resolved
        to the array they name (e.g. Whisper's ``decoder/projection/weight``).

    Raises
    ------
    CT2FormatError
        Unknown binary version, truncated or damaged file, a size that does not add up, or
        trailing bytes; the message names the file and the first problem.
    FileNotFoundError
        No such file.
    """
    parts = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    path = parts[0] if len(parts) == 1 else f"{parts[0]} (+{len(parts) - 1} parts)"
    size = sum(p.stat().st_size for p in parts)
    if size > MAX_BYTES:
        raise CT2FormatError(f"{path}: {size} bytes, more than a model this reader accepts "
                             f"({MAX_BYTES} bytes)")
    r = _Reader(parts[0].read_bytes() if len(parts) == 1
                else b"".join(p.read_bytes() for p in parts), path)
    version = r.uint("I", "the binary version")
    if version not in VERSIONS:
        raise CT2FormatError(f"{path}: binary version {version}, this reader knows "
                             f"{' and '.join(map(str, VERSIONS))} (not a CTranslate2 model, or "
                             "one from another CTranslate2 release: convert it again)")
    spec = r.string("the spec name")
    revision = r.uint("I", "the spec revision")
    count = r.uint("I", "the variable count")
    if count > MAX_VARIABLES:
        raise CT2FormatError(f"{path}: damaged file: {count} variables")
    variables = {}
    for _ in range(count):
        name = r.string("a variable name")
        rank = r.uint("B", f"the rank of {name}")
        if rank > MAX_RANK:
            raise CT2FormatError(f"{path}: damaged file: variable {name} has rank {rank}")
        dims = [r.uint("I", f"the shape of {name}") for _ in range(rank)]
        dtype_id = r.uint("B", f"the dtype of {name}")
        nbytes = r.uint("I", f"the size of {name}")
        variables[name] = _array(r.take(nbytes, f"variable {name}"), dims, dtype_id, name, path)
    for _ in range(r.uint("I", "the alias count")):
        alias, target = r.string("an alias"), r.string("an alias target")
        if target not in variables:
            raise CT2FormatError(f"{path}: damaged file: alias {alias} names a missing "
                                 f"variable {target}")
        variables[alias] = variables[target]
    if r.pos != len(r.data):
        raise CT2FormatError(f"{path}: damaged file: {len(r.data) - r.pos} bytes after the "
                             "last alias")
    return spec, revision, variables
