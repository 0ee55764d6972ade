"""Seeded fuzzing of the two weight readers that exist to be safe: `deepfake_detector.weights.pth`
(PyTorch ``.pth``) and `deepfake_detector.weights.ct2` (CTranslate2 ``model.bin``, with the Whisper
encoder checks of `whisper_import.encoder_architecture`).

Run as a child process by tests/test_hostile_readers.py (a crash is a signal of the child,
not of pytest), or by hand:

    python tests/fuzz_readers.py pth 0 2000 /tmp/fuzz     # kind, seed, cases, work folder

Each case is a mutation of a small valid file (bytes flipped, inserted, deleted, repeated or
cut; for ``.pth`` also inside the pickle, re-zipped with a correct CRC, and integers set to edge
values). Every case must end in a valid result or the reader's own one-line error naming the
file; anything else is printed as ``BAD <case> <what>`` and the child exits 1. Before each case
its number is written to ``<work>/current`` so a crash names it. Memory is capped
(``RLIMIT_AS``, `MEMORY_CAP`), and the peak resident size is printed at the end with how much
the cases added to it (the peak after the imports is the baseline).
"""

import io
import os
import random
import resource
import struct
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import numpy as np  # noqa: E402

MEMORY_CAP = 3 << 30  # address space of the child (a numpy process maps ~1 GB of it)
EDGE_INTS = [0, 1, -1, 2, 255, 256, 65535, 2**31 - 1, -2**31, 2**32 - 1, 2**40, 2**62, 2**63]


# ----------------------------------------------------------------------------- .pth files

class Pickle:
    """A tiny pickle assembler (protocol 2 opcodes, as torch.save writes them)."""

    def __init__(self):
        self.out = [b"\x80\x02"]

    def op(self, raw):
        self.out.append(raw)
        return self

    def glob(self, module, name):
        return self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def str(self, s):
        b = s.encode()
        return self.op(b"X" + struct.pack("<I", len(b)) + b)

    def int(self, n):
        if 0 <= n < 2**31 or -2**31 <= n < 0:
            return self.op(b"J" + struct.pack("<i", n))
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        return self.op(b"\x8a" + bytes([len(raw)]) + raw)

    def float(self, x):
        return self.op(b"G" + struct.pack(">d", x))

    def tuple(self, items):
        self.op(b"(")
        for x in items:
            self.value(x)
        return self.op(b"t")

    def value(self, x):
        if isinstance(x, bytes):
            return self.op(x)  # raw opcodes
        if isinstance(x, str):
            return self.str(x)
        if isinstance(x, float):
            return self.float(x)
        if isinstance(x, int):
            return self.int(x)
        return self.tuple(x)

    def tensor(self, key, size, stride, offset=0, storage="FloatStorage", numel=None,
               storage_ops=None):
        """Push ``_rebuild_tensor_v2(storage(key), offset, size, stride, False, {})``;
        ``storage_ops`` replaces the storage argument (raw opcodes)."""
        self.glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
        if storage_ops is None:
            n = numel if numel is not None else (
                int(np.prod(size)) if all(isinstance(s, int) for s in size) else 1)
            self.op(b"(").str("storage").glob("torch", storage).str(key).str("cpu")
            self.value(n).op(b"tQ")
        else:
            self.op(storage_ops)
        self.value(offset).value(size).value(stride).op(b"\x89}t")  # False, {} ; TUPLE
        return self.op(b"R")

    def state_dict(self, entries):
        """A dict of ``name -> callable(self)`` pushing the value; then STOP."""
        self.op(b"}(")
        for name, push in entries.items():
            self.str(name)
            push(self)
        return self.op(b"u.")

    def bytes(self):
        return b"".join(self.out)


def write_pth(path, pkl, storages, method=zipfile.ZIP_STORED):
    """A torch.save-layout archive: ``archive/data.pkl`` and ``archive/data/<key>``."""
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr("archive/data.pkl", pkl)
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return path


def base_pth():
    """A valid state_dict: float32 matrix, a transposed view, int64 and float16 vectors."""
    w = np.arange(12, dtype="<f4")
    pkl = Pickle().state_dict({
        "w": lambda p: p.tensor("0", (3, 4), (4, 1)),
        "wt": lambda p: p.tensor("0", (4, 3), (1, 4)),
        "n": lambda p: p.tensor("1", (2,), (1,), storage="LongStorage"),
        "h": lambda p: p.tensor("2", (3,), (1,), storage="HalfStorage"),
    }).bytes()
    storages = {"0": w.tobytes(), "1": np.int64([7, -7]).astype("<i8").tobytes(),
                "2": np.float16([0.5, 1, 2]).astype("<f2").tobytes()}
    return pkl, storages


def mutate(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        how, i = rng.randrange(6), rng.randrange(len(data))
        if how == 0:
            data[i] = rng.randrange(256)
        elif how == 1:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif how == 2:
            del data[i:i + rng.randint(1, 8)]
        elif how == 3:  # repeat a segment (nesting, repeated opcodes)
            j = min(len(data), i + rng.randint(1, 32))
            data[i:i] = data[i:j] * rng.randint(2, 200)
        elif how == 4:
            del data[i:]
        else:  # an integer field set to an edge value
            n = rng.choice(EDGE_INTS)
            raw = n.to_bytes(8, "little", signed=n < 0) if -2**63 <= n < 2**64 else b""
            width = rng.choice((1, 2, 4, 8))
            data[i:i + width] = raw[:width]
    return bytes(data)


def pth_case(rng, folder):
    pkl, storages = base_pth()
    kind = rng.randrange(4)
    path = folder / "case.pth"
    if kind == 0:  # inside the pickle, re-zipped with correct CRCs
        write_pth(path, mutate(pkl, rng), storages)
    elif kind == 1:  # a storage cut or grown
        key = rng.choice(sorted(storages))
        storages[key] = mutate(storages[key], rng)
        write_pth(path, pkl, storages)
    else:  # the archive's own bytes (headers, CRCs, directory)
        buf = io.BytesIO()
        write_pth(buf, pkl, storages, rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)))
        path.write_bytes(mutate(buf.getvalue(), rng))
    return path


def pth_check(path):
    from deepfake_detector.weights import pth

    try:
        state = pth.read_state_dict(path)
    except pth.CheckpointError as e:
        return _one_line(e, path)
    if not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()):
        return "a state that is not a dict of arrays"
    return None


# ----------------------------------------------------------------------------- model.bin files

def base_model_bin():
    from test_import_whisper import fake_whisper, write_model_bin

    buf = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-base-{os.getpid()}.bin"
    write_model_bin(buf, fake_whisper(layers=1, h=8, heads=2, ffn=16, mels=4, positions=4),
                    aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
    data = buf.read_bytes()
    buf.unlink()
    return data


def ct2_case(rng, folder, base):
    path = folder / "model.bin"
    path.write_bytes(mutate(base, rng))
    return path


def ct2_check(path):
    from deepfake_detector.weights import ct2, whisper_import

    try:
        spec, _, variables = ct2.read_model_bin(path)
        arch = whisper_import.encoder_architecture(spec, variables, path)
        weights = whisper_import.keras_encoder_weights(variables, arch)
    except ct2.CT2FormatError as e:
        return _one_line(e, path)
    if not all(np.isfinite(w).all() for w in weights.values()):
        return "non-finite weights accepted"
    return None


def _one_line(error, path):
    text = str(error)
    if "\n" in text or str(path) not in text:
        return f"error message not one line naming the file: {text[:200]!r}"
    if "MemoryError" in text or "RecursionError" in text:
        return f"resource exhaustion: {text[:200]!r}"
    return None


# -----------------------------------------------------------------------------

def peak_rss_mb():
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` would carry the parent's
    peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    kind, seed, cases, folder = (argv or sys.argv[1:])[:4]
    seed, cases, folder = int(seed), int(cases), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    base = base_model_bin() if kind == "ct2" else None
    import deepfake_detector.weights.pth  # noqa: F401 - baseline
    import deepfake_detector.weights.whisper_import  # noqa: F401 - baseline
    start_mb = peak_rss_mb()
    bad = 0
    for case in range(cases):
        (folder / "current").write_text(f"{seed} {case}\n")
        rng = random.Random(f"{kind}-{seed}-{case}")
        path = pth_case(rng, folder) if kind == "pth" else ct2_case(rng, folder, base)
        try:
            problem = pth_check(path) if kind == "pth" else ct2_check(path)
        except Exception as e:  # noqa: BLE001 - the point: nothing else may escape
            problem = f"{type(e).__name__} escaped: {str(e)[:200]!r}"
        if problem:
            bad += 1
            print(f"BAD {seed} {case} {problem}", flush=True)
    peak_mb = peak_rss_mb()
    print(f"DONE {cases} cases, {bad} bad, peak {peak_mb:.0f} MB, grew "
          f"{peak_mb - start_mb:.0f} MB", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
