"""Read a PyTorch ``state_dict`` checkpoint (``.pth``) without PyTorch, and safely.

A ``.pth`` written by ``torch.save`` (PyTorch >= 1.6) is a zip archive: ``<name>/data.pkl``, a
pickle of the (ordered) dict of tensors, whose storages are the raw little-endian files
``<name>/data/<key>``. A pickle is a program: it can name any Python callable, mutate the
objects it names and nest without bound. This reader does not hand the pickle to Python's
unpickler. It decodes the opcodes with the standard library (`pickletools.genops`) and runs
them on a small machine of its own that knows only data (ints, floats, strings, tuples, lists,
dicts), ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the storage types
of `STORAGE_DTYPES`; any other name, and any opcode a ``state_dict`` never needs, is refused
with `CheckpointError` before anything is called. By construction:

- nothing outlives a load: the names a pickle may use are objects made for that load (a
  ``BUILD`` is accepted only on an ``OrderedDict`` the load made, and its state is dropped);
- a storage is only what the archive holds: ``_rebuild_tensor_v2`` accepts only the storage
  objects this reader made from zip members (1-D bytes), and a tensor's extent is checked in
  bytes against that buffer (NumPy checks it again when it makes the view);
- nothing recurses over loaded objects: dict keys must be strings or integers (never a
  tuple to hash), messages name types, never ``repr`` a loaded object, and tuple nesting is
  bounded (`MAX_DEPTH`);
- cost is bounded by what the file declares before anything is allocated: the archive's
  declared sizes (`MAX_BYTES`, `MAX_PICKLE`), each storage member read once however often the
  pickle names it, and the tensors' total size (checked before each copy) at most
  ``2 x`` the storages' bytes plus 1 MiB (a stride-0 "tensor" cannot grow a 4-byte storage
  into gigabytes).

Tensors come back as NumPy arrays (copies; strides and offsets honoured).

The format is PyTorch's serialization (``torch/serialization.py``, ``torch/_utils.py``:
``_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks)``;
persistent ids ``("storage", storage_type, key, location, numel)``); the opcodes are those of
the pickle protocols (``pickletools``' documentation).
"""

import collections
import io
import pickletools
import struct
import zipfile
import zlib

import numpy as np

from ..cli import printable

# -----------------------------------------------------------------------------
# storage types a state_dict may hold -> NumPy dtype of their bytes
STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
                  "BFloat16Storage": None, "LongStorage": "<i8", "IntStorage": "<i4",
                  "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
                  "BoolStorage": "?"}
MAX_MEMBERS = 100_000  # entries in the zip archive
MAX_BYTES = 4 << 30  # total uncompressed size accepted (a state_dict, not a data set)
MAX_PICKLE = 64 << 20  # data.pkl itself (a state_dict of 100,000 tensors takes ~10 MB)
MAX_DEPTH = 32  # nesting of tuples, lists and dicts (a state_dict needs 4)
MAX_RANK = 32  # dimensions of a tensor
MAX_DIM = 1 << 40  # a size, stride or offset
OUTPUT_SLACK = 1 << 20  # bytes of tensors allowed beyond 2 x the storages' bytes
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # torch.save writes stored members
# errors the standard library raises on damaged zip members or pickle bytes
DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, struct.error,
          ValueError, OverflowError, OSError, KeyError, IndexError)
# -----------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A file that is not a readable, safe PyTorch state_dict (the message says why)."""

    def __init__(self, message):
        super().__init__(printable(message))  # names read from the file may hold anything


class _StorageType:
    """Stands for ``torch.<Type>Storage`` inside one load's pickle (made anew per load)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _Storage:
    """The bytes of one storage member of the archive, as this reader read them."""

    __slots__ = ("key", "dtype", "data")

    def __init__(self, key, dtype, data):
        self.key, self.dtype, self.data = key, dtype, data


class _Global:
    """A callable name the pickle may use (``OrderedDict`` or ``_rebuild_tensor_v2``)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _OrderedDict(collections.OrderedDict):
    """An ``OrderedDict`` made by this load (the one thing ``BUILD`` may be applied to)."""


def _index(value, what, source, low=0, high=MAX_DIM):
    """``value`` as an int in [low, high], else one line naming ``what``."""
    if type(value) is not int or not low <= value <= high:  # bools and floats too
        shown = value if type(value) is int and abs(value) < 1 << 64 else type(value).__name__
        raise CheckpointError(f"{source}: damaged checkpoint: {what} is {shown}, not an "
                              f"integer in [{low}, {high}]")
    return value


class _Machine:
    """Runs the opcodes of one ``data.pkl`` (module docstring); `load` returns the object."""

    def __init__(self, archive, prefix, source):
        self.archive, self.prefix, self.source = archive, prefix, source
        self.stack, self.marks, self.memo = [], [], {}
        self.types = {name: _StorageType(name) for name in STORAGE_DTYPES}
        self.globals = {("collections", "OrderedDict"): _Global("OrderedDict"),
                        ("torch._utils", "_rebuild_tensor_v2"): _Global("_rebuild_tensor_v2"),
                        **{("torch", name): t for name, t in self.types.items()}}
        self.storages = {}  # key -> _Storage: a member is read once
        self.depth = {}  # id(container) -> nesting depth (containers are kept alive by keep)
        self.keep = []
        self.storage_bytes = 0
        self.output_bytes = 0

    def fail(self, why):
        raise CheckpointError(f"{self.source}: {why}")

    # --- containers ------------------------------------------------------------------------
    def _depth_of(self, obj):
        return self.depth.get(id(obj), 0) if isinstance(obj, (tuple, list, dict)) else 0

    def _nest(self, items):
        """The depth of a container holding ``items``; refused past `MAX_DEPTH`."""
        d = 1 + max((self._depth_of(x) for x in items), default=0)
        if d > MAX_DEPTH:
            self.fail(f"damaged checkpoint: objects nested more than {MAX_DEPTH} deep (a "
                      "state_dict nests 4)")
        return d

    def _made(self, obj, items):
        self.depth[id(obj)] = self._nest(items)
        self.keep.append(obj)
        return obj

    def _grow(self, container, items):
        self.depth[id(container)] = max(self.depth.get(id(container), 1), self._nest(items))

    def pop_mark(self):
        if not self.marks:
            self.fail("damaged checkpoint: pickle pops a mark it never set")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def pop(self, n=1):
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < n:
            self.fail("damaged checkpoint: pickle stack underflow")
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def set_items(self, target, items):
        if not isinstance(target, dict) or len(items) % 2:
            self.fail("damaged checkpoint: SETITEMS without a dict")
        for k, v in zip(items[::2], items[1::2]):
            if type(k) not in (str, int):  # never hash a loaded tuple (deep ones crash)
                self.fail(f"not a state_dict: a dict key of type {type(k).__name__}")
            target[k] = v
        self._grow(target, items[1::2])

    # --- the names a state_dict needs --------------------------------------------------------
    def find(self, module, name):
        if type(module) is not str or type(name) is not str:
            self.fail("damaged checkpoint: a global whose name is not a string")
        obj = self.globals.get((module, name))
        if obj is None:
            self.fail(f"refused: the checkpoint's pickle names {module[:80]}.{name[:80]}, "
                      "which a state_dict of tensors never needs (a crafted file may run code "
                      "this way); nothing was executed")
        return obj

    def persistent(self, pid):
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and type(pid[2]) is str):
            self.fail(f"damaged checkpoint: unexpected persistent id (a {type(pid).__name__})")
        _, kind, key, _, numel = pid
        numel = _index(numel, f"the element count of storage {key[:40]!r}", self.source)
        dtype = STORAGE_DTYPES[kind.name]
        if dtype is None:
            self.fail(f"{kind.name} tensors are not supported")
        dtype = np.dtype(dtype)
        stored = self.storages.get(key)
        if stored is None:
            member = f"{self.prefix}data/{key}"
            try:
                info = self.archive.getinfo(member)
            except KeyError:
                self.fail(f"storage {member[:80]} is missing (truncated or damaged archive)")
            self.storage_bytes += info.file_size
            stored = self.storages[key] = _Storage(key, dtype, self.archive.read(member))
        elif stored.dtype != dtype:
            self.fail(f"damaged checkpoint: storage {key[:40]!r} is read as {stored.dtype} and "
                      f"as {dtype}")
        if len(stored.data) < numel * dtype.itemsize:
            self.fail(f"storage {key[:40]!r} holds {len(stored.data) // dtype.itemsize} "
                      f"values, the pickle says {numel} (truncated file?)")
        return stored

    def rebuild_tensor(self, args):
        if type(args) is not tuple or len(args) < 4:
            self.fail("damaged checkpoint: _rebuild_tensor_v2 called with other arguments")
        storage, offset, size, stride = args[:4]
        if not isinstance(storage, _Storage):  # only what persistent() made from the archive
            self.fail("damaged checkpoint: a tensor whose storage is not one of the archive's "
                      f"(a {type(storage).__name__})")
        if type(size) is not tuple or type(stride) is not tuple or len(size) != len(stride) \
                or len(size) > MAX_RANK:
            self.fail("damaged checkpoint: a tensor's size and stride are not tuples of one "
                      f"length up to {MAX_RANK}")
        offset = _index(offset, "a tensor's storage offset", self.source)
        size = tuple(_index(n, "a tensor's size", self.source) for n in size)
        stride = tuple(_index(s, "a tensor's stride", self.source) for s in stride)
        item = storage.dtype.itemsize
        count = 1
        for n in size:
            count *= n
        nbytes = count * item
        if self.output_bytes + nbytes > 2 * self.storage_bytes + OUTPUT_SLACK:
            self.fail(f"tensors of {self.output_bytes + nbytes} bytes from storages of "
                      f"{self.storage_bytes}: a checkpoint's tensors are views of its storages "
                      "(a crafted file can declare huge strided views of a few bytes)")
        if count:
            last = (offset + sum((n - 1) * s for n, s in zip(size, stride))) * item + item
            if last > len(storage.data):
                self.fail(f"a tensor of size {size} runs past its storage {storage.key[:40]!r} "
                          f"of {len(storage.data)} bytes (truncated file?)")
            view = np.ndarray(size, storage.dtype, buffer=storage.data, offset=offset * item,
                              strides=tuple(s * item for s in stride))
        else:
            view = np.empty(size, storage.dtype)
        self.output_bytes += nbytes
        return view.copy()

    def call(self, func, args):
        if not isinstance(func, _Global):
            self.fail(f"refused: the pickle calls a {type(func).__name__}; a state_dict calls "
                      "only OrderedDict and _rebuild_tensor_v2")
        if func.name == "_rebuild_tensor_v2":
            return self.rebuild_tensor(args)
        if args != ():
            self.fail("damaged checkpoint: OrderedDict called with arguments")
        return self._made(_OrderedDict(), ())

    # --- the opcodes -----------------------------------------------------------------------
    def load(self, data):
        try:
            for op, arg, _ in pickletools.genops(io.BytesIO(data)):
                name = op.name
                if name == "STOP":
                    if len(self.stack) != 1 or self.marks:
                        self.fail("damaged checkpoint: pickle ends with a stack of "
                                  f"{len(self.stack)} objects")
                    return self.stack.pop()
                self.step(name, arg)
        except CheckpointError:
            raise
        except DAMAGE as e:
            self.fail(f"damaged checkpoint ({type(e).__name__}: {str(e)[:200]})")
        self.fail("damaged checkpoint: the pickle has no STOP")

    def step(self, name, arg):  # noqa: C901 - one branch per opcode, as pickle's own loop
        s = self.stack
        if name in ("PROTO", "FRAME"):
            return
        if name in ("NONE", "NEWTRUE", "NEWFALSE"):
            s.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT",
                      "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES",
                      "SHORT_BINBYTES", "BINBYTES8"):
            s.append(arg)
        elif name == "MARK":
            self.marks.append(len(s))
        elif name in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "TUPLE"):
            items = {"EMPTY_TUPLE": list, "TUPLE": self.pop_mark}.get(
                name, lambda: self.pop(int(name[-1])))()
            s.append(self._made(tuple(items), items))
        elif name in ("EMPTY_LIST", "LIST"):
            items = self.pop_mark() if name == "LIST" else []
            s.append(self._made(list(items), items))
        elif name in ("EMPTY_DICT", "DICT"):
            items = self.pop_mark() if name == "DICT" else []
            target = self._made({}, ())
            self.set_items(target, items)
            s.append(target)
        elif name in ("APPEND", "APPENDS"):
            items = self.pop() if name == "APPEND" else self.pop_mark()
            target = self.pop()[0]
            if not isinstance(target, list):
                self.fail(f"damaged checkpoint: {name} to a {type(target).__name__}")
            self._grow(target, items)
            target.extend(items)
            s.append(target)
        elif name in ("SETITEM", "SETITEMS"):
            items = self.pop(2) if name == "SETITEM" else self.pop_mark()
            target = self.pop()[0]
            self.set_items(target, items)
            s.append(target)
        elif name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not s:
                self.fail("damaged checkpoint: memo of an empty stack")
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = s[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                self.fail(f"damaged checkpoint: memo {arg} read before it is written")
            s.append(self.memo[arg])
        elif name == "POP":
            self.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            s.append(self.pop()[0])
            s.append(s[-1])
        elif name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            s.append(self.find(module, attr))
        elif name == "STACK_GLOBAL":
            module, attr = self.pop(2)
            s.append(self.find(module, attr))
        elif name == "REDUCE":
            func, args = self.pop(2)
            s.append(self.call(func, args))
        elif name == "BINPERSID":
            s.append(self.persistent(self.pop()[0]))
        elif name == "BUILD":
            state, target = self.pop()[0], self.stack[-1] if self.stack else None
            if not isinstance(target, _OrderedDict) or not isinstance(state, dict):
                self.fail("refused: the pickle sets the state of a "
                          f"{type(target).__name__}; a state_dict sets only its OrderedDict's "
                          "metadata")  # the state (torch's _metadata) is dropped
        else:
            self.fail(f"refused: pickle opcode {name}, which a state_dict never needs")


def _open_archive(path, source):
    """The zip archive, its data.pkl and prefix; one line for anything else."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error,
            NotImplementedError) as e:
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
    try:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > MAX_BYTES:
            raise CheckpointError(f"{source}: archive too large for a state_dict")
        odd = [i for i in infos if i.flag_bits & 0x1 or i.compress_type not in ZIP_METHODS]
        if odd:
            raise CheckpointError(
                f"{source}: damaged or foreign archive: member {odd[0].filename[:80]!r} is "
                + ("encrypted" if odd[0].flag_bits & 0x1 else
                   f"compressed with method {odd[0].compress_type}")
                + " (torch.save writes plain members)")
        pkl = [i for i in infos if i.filename.endswith("/data.pkl")
               and i.filename.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointError(f"{source}: no <name>/data.pkl in the archive (not a "
                                  "torch.save checkpoint)")
        if pkl[0].file_size > MAX_PICKLE:
            raise CheckpointError(f"{source}: data.pkl of {pkl[0].file_size} bytes is too "
                                  f"large for a state_dict (at most {MAX_PICKLE})")
        return archive, archive.read(pkl[0]), pkl[0].filename[:-len("data.pkl")]
    except BaseException:
        archive.close()
        raise


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
        pickle that names anything but tensors and dicts, a tensor outside its storage, or not
        a flat dict of tensors: one line naming the file and the problem.
    """
    source = str(path)
    try:
        archive, data, prefix = _open_archive(path, source)
        with archive:
            state = _Machine(archive, prefix, source).load(data)
    except CheckpointError:
        raise
    except (NotImplementedError, RuntimeError, RecursionError, MemoryError, *DAMAGE) as e:
        raise CheckpointError(f"{source}: damaged checkpoint ({type(e).__name__}: "
                              f"{str(e)[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: the checkpoint holds a {type(state).__name__}, not a "
                              "state_dict")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        key = bad[0] if isinstance(bad[0], str) else type(bad[0]).__name__
        raise CheckpointError(f"{source}: not a flat state_dict of tensors (entry "
                              f"{key[:60]!r} is not a tensor)")
    return dict(state)
