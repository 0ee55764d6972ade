"""Read a PyTorch ``state_dict`` checkpoint (``.pth``) without PyTorch, and safely.

A ``.pth`` written by ``torch.save`` (PyTorch >= 1.6) is a zip archive: ``<name>/data.pkl``, a
pickle of the (ordered) dict of tensors, whose storages are the raw little-endian files
``<name>/data/<key>``. A pickle can name any Python callable and so run any code while it loads;
this reader's unpickler resolves only the few names a ``state_dict`` of tensors needs
(`ALLOWED`) to functions of its own, and refuses every other name with `CheckpointError` before
anything is called. Tensors come back as NumPy arrays (a copy; strides and offsets honoured).

The format is PyTorch's serialization (``torch/serialization.py``, ``torch/_utils.py``:
``_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks)``;
persistent ids ``("storage", storage_type, key, location, numel)``).
"""

import collections
import io
import pickle
import zipfile

import numpy as np

# -----------------------------------------------------------------------------
# storage types a state_dict may hold -> NumPy dtype of their bytes
STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
                  "BFloat16Storage": None, "LongStorage": "<i8", "IntStorage": "<i4",
                  "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
                  "BoolStorage": "?"}
MAX_MEMBERS = 100_000  # entries in the zip archive
MAX_BYTES = 4 << 30  # total uncompressed size accepted (a state_dict, not a data set)
# -----------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A file that is not a readable, safe PyTorch state_dict (the message says why)."""


class _Storage:
    """A dtype marker standing for ``torch.<Type>Storage`` inside the pickle."""

    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_):
    """``torch._utils._rebuild_tensor_v2``: a view of ``storage`` as a NumPy array (copied)."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise CheckpointError(f"tensor with a negative size, stride or offset: {size} {stride}")
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset
    if all(size) and last >= storage.size:
        raise CheckpointError(f"tensor of size {size} runs past its storage of "
                              f"{storage.size} elements (truncated file?)")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * item for s in stride])
    return np.array(view)


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


ALLOWED = {("collections", "OrderedDict"): _ordered_dict,
           ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
           **{("torch", name): _Storage(name) for name in STORAGE_DTYPES}}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, data, archive, prefix, source):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f"{self.source}: refused: the checkpoint's pickle names "
                                  f"{module}.{name}, which a state_dict of tensors never "
                                  "needs (a crafted file may run code this way); nothing "
                                  "was executed") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _Storage)):
            raise CheckpointError(f"{self.source}: unexpected persistent id {str(pid)[:80]}")
        _, kind, key, _, numel = pid
        dtype = STORAGE_DTYPES[kind.name]
        if dtype is None:
            raise CheckpointError(f"{self.source}: {kind.name} tensors are not supported")
        member = f"{self.prefix}data/{key}"
        try:
            raw = self.archive.read(member)
        except KeyError:
            raise CheckpointError(f"{self.source}: storage {member} is missing "
                                  "(truncated or damaged archive)") from None
        arr = np.frombuffer(raw, dtype=dtype)
        if arr.size < int(numel):
            raise CheckpointError(f"{self.source}: storage {key} holds {arr.size} values, the "
                                  f"pickle says {numel} (truncated file?)")
        return arr


def read_state_dict(path):
    """The tensors of a ``torch.save``'d state_dict, without PyTorch and without running code.

    Parameters
    ----------
    path : str or Path
        A ``.pth``/``.pt`` zip archive (PyTorch >= 1.6 format).

    Returns
    -------
    state : dict of str -> np.ndarray
        In the checkpoint's order; a checkpoint that wraps its state_dict (``{"model": {...}}``
        and the like) is refused with its keys named.

    Raises
    ------
    CheckpointError
        Not a zip archive (the legacy format, or not a checkpoint), damaged, too large, a
        pickle that names anything but tensors and dicts, or not a flat dict of tensors.
    """
    source = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        try:
            with open(path, "rb") as f:
                zip_start = f.read(4) == b"PK\x03\x04"
        except OSError:
            zip_start = False
        if zip_start:
            raise CheckpointError(f"{source}: truncated or damaged zip archive ({e}); "
                                  "download the checkpoint again") from None
        raise CheckpointError(f"{source}: not a PyTorch zip checkpoint ({e}); legacy "
                              "(pre-1.6) .pth files are not supported") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > MAX_BYTES:
            raise CheckpointError(f"{source}: archive too large for a state_dict")
        pkl = [i.filename for i in infos if i.filename.endswith("/data.pkl")
               and i.filename.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointError(f"{source}: no <name>/data.pkl in the archive (not a "
                                  "torch.save checkpoint)")
        prefix = pkl[0][:-len("data.pkl")]
        try:
            state = _SafeUnpickler(archive.read(pkl[0]), archive, prefix, source).load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
                IndexError, KeyError, AttributeError, OSError) as e:
            raise CheckpointError(f"{source}: damaged checkpoint ({type(e).__name__}: "
                                  f"{e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: the checkpoint holds a {type(state).__name__}, not a "
                              "state_dict")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"{source}: not a flat state_dict of tensors (entry "
                              f"{str(bad[0])[:60]!r} is not a tensor)")
    return dict(state)
