"""The weight readers that exist to be safe, against crafted files (issue 32, items 1-4, 8, 11
and 13): every case ends in one line naming the file, never a crash, a traceback, memory
taken from elsewhere or state that outlives the load; and a seeded fuzzer of both readers in a
child process (tests/fuzz_readers.py).

The fuzz runs `FUZZ_CASES` mutated files per reader here (``$DEEPFAKE_FUZZ_CASES`` and
``$DEEPFAKE_FUZZ_SEED`` to change it; docs/reference.md states the long run's command and
result).
"""

import json
import os
import resource
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import REPO
from deepfake_detector.weights import checkpoints, ct2, pth
from fuzz_readers import Pickle, base_pth, write_pth

FUZZ_CASES = int(os.environ.get("DEEPFAKE_FUZZ_CASES", "3000"))
FUZZ_SEED = os.environ.get("DEEPFAKE_FUZZ_SEED", "0")
FUZZ_GROWTH_MB = 200  # resident memory the cases may add to the child's (its imports' peak)


def one_line(error, path):
    text = str(error)
    assert "\n" not in text and str(path) in text, text
    return text


def read_error(path, match):
    with pytest.raises(pth.CheckpointError, match=match) as e:
        pth.read_state_dict(path)
    return one_line(e.value, path)


# ----------------------------------------------------------------------------- .pth: items 1-4

def test_the_base_file_of_the_fuzzer_reads_with_views_and_dtypes(tmp_path):
    pkl, storages = base_pth()
    state = pth.read_state_dict(write_pth(tmp_path / "ok.pth", pkl, storages))
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(state["w"], w)
    np.testing.assert_array_equal(state["wt"], w.T)  # a strided view of the same storage
    assert state["n"].dtype == np.int64 and list(state["n"]) == [7, -7]
    assert state["h"].dtype == np.float16 and list(state["h"]) == [0.5, 1, 2]


def test_a_tensor_is_never_a_storage(tmp_path):
    """Item 1: a tensor passed on as the storage of another (a 2-D array) made as_strided read
    998,000 values of heap memory, or crash (SIGSEGV)."""
    inner = Pickle().tensor("0", (1000, 999), (999, 1)).bytes()[2:]  # without PROTO
    pkl = Pickle().state_dict({"w": lambda p: p.tensor("x", (1000, 999), (999, 1),
                                                       storage_ops=inner)}).bytes()
    path = write_pth(tmp_path / "nested.pth", pkl, {"0": bytes(4 * 999_000)})
    read_error(path, "a tensor whose storage is not one of the archive's")


def test_a_view_past_its_storage_is_refused_in_bytes(tmp_path):
    pkl = Pickle().state_dict({"w": lambda p: p.tensor("0", (4, 4), (4, 1), offset=1,
                                                       numel=16)}).bytes()
    path = write_pth(tmp_path / "past.pth", pkl, {"0": bytes(64)})
    read_error(path, r"runs past its storage '0' of 64 bytes")


def test_deep_nesting_is_refused_before_it_can_crash(tmp_path):
    """Item 2: a dict key of 200,000 nested tuples crashed the process while hashing; deep
    persistent ids gave RecursionError tracebacks."""
    deep = b")" + b"\x85" * 200_000  # () then TUPLE1 200,000 times
    pkl = b"\x80\x02}" + deep + b"Ns."  # {deep_key: None}
    read_error(write_pth(tmp_path / "key.pth", pkl, {}), "nested more than 32 deep")
    pid = b"\x80\x02}X\x01\x00\x00\x00w" + b")" + b"\x85" * 100_000 + b"Qs."
    read_error(write_pth(tmp_path / "pid.pth", pid, {}), "nested more than 32 deep")
    flat_key = b"\x80\x02}(J\x01\x00\x00\x00J\x02\x00\x00\x00tNs."  # {(1, 2): None}
    read_error(write_pth(tmp_path / "tuplekey.pth", flat_key, {}), "a dict key of type tuple")


def test_nothing_a_pickle_does_outlives_its_load(tmp_path):
    """Item 3: BUILD on the storage-type marker renamed it, so the next checkpoint read in the
    same process decoded float32 as int8; BUILD also rewrote _rebuild_tensor_v2's defaults."""
    rename = (Pickle().glob("torch", "FloatStorage").op(b"}X\x04\x00\x00\x00name")
              .str("CharStorage").op(b"sb").op(b"0").state_dict({}).bytes())
    read_error(write_pth(tmp_path / "rename.pth", rename, {}),
               "refused: the pickle sets the state of a _StorageType")
    defaults = (Pickle().glob("torch._utils", "_rebuild_tensor_v2").op(b"}X\x0c\x00\x00\x00"
                b"__defaults__").op(b")sb0").state_dict({}).bytes())
    read_error(write_pth(tmp_path / "defaults.pth", defaults, {}), "refused: the pickle sets")
    pkl, storages = base_pth()
    state = pth.read_state_dict(write_pth(tmp_path / "next.pth", pkl, storages))
    assert state["w"].dtype == np.float32 and state["w"][1, 1] == 5.0


def test_cost_is_bounded_by_what_the_file_declares(tmp_path):
    """Item 4: one member loaded 4,000 times (3.45 GB from a 261 KB file), and a stride-0
    tensor of 65,536 x 65,536 over a 4-byte storage (16 GiB asked by a 531-byte file)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    many = Pickle().state_dict({f"w{i}": (lambda p: p.tensor("0", (262_144,), (1,)))
                                for i in range(4000)}).bytes()
    path = write_pth(tmp_path / "many.pth", many, {"0": bytes(4 * 262_144)},
                     zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 300_000
    read_error(path, r"tensors of \d+ bytes from storages of 1048576")
    broadcast = Pickle().state_dict({"w": lambda p: p.tensor("0", (65536, 65536), (0, 0),
                                                             numel=1)}).bytes()
    read_error(write_pth(tmp_path / "stride0.pth", broadcast, {"0": bytes(4)}),
               r"tensors of 17179869184 bytes from storages of 4")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    assert grown < 100 * 1024, f"peak memory grew by {grown / 1024:.0f} MB"


@pytest.mark.parametrize("what, pickle_ops, why", [
    ("inf size", lambda p: p.tensor("0", (float("inf"),), (1,)), "a tensor's size is float"),
    ("huge size", lambda p: p.tensor("0", (2**40 + 1,), (1,), numel=1),
     r"a tensor's size is 1099511627777"),
    ("huge numel", lambda p: p.tensor("0", (1,), (1,), numel=2**80), "element count"),
    ("negative stride", lambda p: p.tensor("0", (2,), (-1,)), r"stride is -1"),
    ("bool offset", lambda p: p.tensor("0", (1,), (1,), offset=b"\x88"), "offset is bool"),
    ("size not a tuple", lambda p: p.tensor("0", b"J\x02\x00\x00\x00", (1,), numel=1),
     "size and stride are not tuples"),
    ("binbytes8 of 2^62", lambda p: p.op(b"\x8e" + struct.pack("<Q", 2**62)),
     r"damaged checkpoint \(ValueError"),
    ("unknown opcode", lambda p: p.op(b"\xff"), r"damaged checkpoint \(ValueError"),
    ("os.system", lambda p: p.glob("os", "system"), r"refused: .*names os\.system"),
    ("protocol 0 INST", lambda p: p.op(b"(ios\nsystem\n"), "refused: pickle opcode INST"),
])
def test_crafted_numbers_and_opcodes_get_one_line(tmp_path, what, pickle_ops, why):
    """Item 13 (.pth): inf or oversized sizes, numel and strides, a BINBYTES8 of 2^62 bytes."""
    pkl = Pickle().state_dict({"w": pickle_ops}).bytes()
    path = write_pth(tmp_path / "crafted.pth", pkl, {"0": bytes(64)})
    read_error(path, why)


def test_zip_flags_and_methods_get_one_line(tmp_path):
    """Item 13: a zip "encrypted" flag and an unknown compression method gave tracebacks."""
    pkl, storages = base_pth()
    data = bytearray(write_pth(tmp_path / "ok.pth", pkl, storages).read_bytes())
    cd = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x01\x02"))  # a directory entry
    encrypted = bytearray(data)
    encrypted[cd + 8] |= 1  # general purpose flag bit 0
    (tmp_path / "enc.pth").write_bytes(encrypted)
    read_error(tmp_path / "enc.pth", "is encrypted")
    method = bytearray(data)
    method[cd + 10:cd + 12] = struct.pack("<H", 99)  # AES / unknown
    (tmp_path / "method.pth").write_bytes(method)
    read_error(tmp_path / "method.pth", "compressed with method 99")


def test_nan_weights_are_not_imported(tmp_path, monkeypatch):
    """Item 8: NaN weights imported cleanly, then predict.py died on NaN logits (read as
    silent windows)."""
    from deepfake_detector.models import aasist
    from test_aasist import write_state_dict

    model = aasist.build_aasist("AASIST-L")
    targets = checkpoints._torch_targets(model)
    tensors = {}
    for name, (var, transform) in targets.items():
        shape = tuple(var.shape) if transform is checkpoints._same else tuple(var.shape)[::-1]
        tensors[name] = np.zeros(shape, np.float32)
    tensors["out_layer.weight"] = np.zeros((2, 160), np.float32)
    tensors["out_layer.bias"] = np.zeros(2, np.float32)
    tensors["master1"].flat[0] = np.nan
    path = write_state_dict(tmp_path / "nan.pth", tensors, monkeypatch)
    with pytest.raises(checkpoints.ArchitectureMismatch, match="master1 holds NaN") as e:
        checkpoints.load_state_dict(model, pth.read_state_dict(path), str(path))
    one_line(e.value, path)


# ----------------------------------------------------------------------------- model.bin

keras_hub = pytest.importorskip("keras_hub", reason="the Whisper import needs "
                                                    "requirements-whisper.txt")
from deepfake_detector.weights import whisper_import  # noqa: E402
from test_import_whisper import fake_whisper, write_model_bin  # noqa: E402


def small_whisper(**change):
    v = fake_whisper(layers=1, h=8, heads=2, ffn=16, mels=4, positions=4)
    v.update(change)
    return v


def ct2_error(path, match):
    with pytest.raises(ct2.CT2FormatError, match=match) as e:
        spec, _, variables = ct2.read_model_bin(path)
        whisper_import.encoder_architecture(spec, variables, path)
    return one_line(e.value, path)


def test_dims_whose_product_wraps_are_refused(tmp_path):
    """Item 13: dims whose int64 product wrapped to 0 passed the size check."""
    path = write_model_bin(tmp_path / "model.bin", {"a": np.zeros(0, np.float32)})
    data = path.read_bytes()
    rank_at = data.index(b"a\0") + 2
    # rank 4 with dims of 2^16: 2^64 elements, 0 in int64, and 0 bytes of data declared
    path.write_bytes(data[:rank_at] + struct.pack("<B4I", 4, *[65536] * 4) + data[rank_at + 5:])
    ct2_error(path, r"shape \(65536, 65536, 65536, 65536\) x 4 bytes does not match its 0 bytes")


@pytest.mark.parametrize("what, change, why", [
    ("zero dims", dict(**{"encoder/conv1/weight": np.zeros((0, 4, 3), np.float16)}),
     "has shape|of size zero"),
    ("NaN heads", {"encoder/num_heads": np.float32(np.nan)}, "num_heads is a float32 value"),
    ("inf heads", {"encoder/num_heads": np.float32(np.inf)}, "num_heads is a float32 value"),
    ("int8 weight without scale",
     {"encoder/conv2/weight": np.ones((8, 8, 3), np.int8)}, "holds int8 values: quantized"),
    ("NaN weight", {"encoder/layer_norm/gamma": np.full(8, np.nan, np.float16)},
     "layer_norm/gamma holds NaN"),
])
def test_crafted_whisper_models_get_one_line(tmp_path, what, change, why):
    path = write_model_bin(tmp_path / "model.bin", small_whisper(**change))
    ct2_error(path, why)


def test_an_all_zero_whisper_is_refused(tmp_path):
    v = {k: np.zeros([0] * np.ndim(a), a.dtype) if np.ndim(a) else a
         for k, a in small_whisper().items()}
    ct2_error(write_model_bin(tmp_path / "model.bin", v), "of size zero|has shape")


@pytest.mark.parametrize("content, why", [
    (b"not json", "not a JSON file"), (b"null", "holds a NoneType"), (b"[1, 2]", "holds a list"),
    (b"\xff\xfe{}", "not a JSON file"), (b'{"n_fft": 1e999}', "n_fft = inf is not an integer"),
    (b'{"hop_length": 0}', r"hop_length = 0 is not an integer in \[1, 16384\]"),
    (b'{"n_fft": -5}', "n_fft = -5"), (b'{"sampling_rate": 0}', "sampling_rate = 0"),
    (b'{"n_fft": 400, "hop_length": 800}', "hop_length 800 is longer than n_fft 400"),
])
def test_a_malformed_preprocessor_config_gets_one_line(tmp_path, content, why):
    folder = tmp_path / "fw"
    folder.mkdir()
    write_model_bin(folder / "model.bin", small_whisper())
    (folder / "preprocessor_config.json").write_bytes(content)
    with pytest.raises(ct2.CT2FormatError, match=why) as e:
        whisper_import.import_preset(folder, tmp_path / "preset")
    assert "\n" not in str(e.value) and "preprocessor_config.json" in str(e.value)
    assert not (tmp_path / "preset").exists()


def test_overwrite_replaces_only_a_preset_of_the_importer(tmp_path, monkeypatch, capsys):
    """Item 6: --overwrite deleted whatever --out named (`--out . --overwrite` wiped the
    current folder); --out FILE --overwrite gave a traceback."""
    import import_whisper

    folder = tmp_path / "fw"
    folder.mkdir()
    write_model_bin(folder / "model.bin", small_whisper())
    mine = tmp_path / "my_models"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    (tmp_path / "file").write_text("keep me too")
    monkeypatch.chdir(mine)
    for out, why in ((mine, "is the current folder or one above it"),
                     (".", "is the current folder or one above it"),
                     (tmp_path, "is the current folder or one above it"),
                     (tmp_path / "file", "is not a preset folder"),
                     (tmp_path / "fw", "is not a preset this importer wrote")):
        with pytest.raises(SystemExit, match=why):
            import_whisper.main([str(folder), "--out", str(out), "--overwrite"])
    assert (mine / "precious.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "keep me too"
    assert (folder / "model.bin").is_file()
    with pytest.raises(SystemExit, match="cannot write the preset"):
        import_whisper.main([str(folder), "--out", str(tmp_path / "file" / "sub")])
    preset = tmp_path / "preset"
    import_whisper.main([str(folder), "--out", str(preset)])
    import_whisper.main([str(folder), "--out", str(preset), "--overwrite"])  # its own: replaced
    assert json.loads((preset / "import.json").read_text())["architecture"]["hidden_dim"] == 8
    assert not list(tmp_path.glob(".preset.*"))


# ----------------------------------------------------------------------------- the fuzzers

@pytest.mark.parametrize("kind", ["pth", "ct2"])
def test_fuzzed_files_end_in_a_result_or_one_line(kind, tmp_path):
    """Thousands of seeded mutations of a valid file per reader, in a child process: no
    signal, no exception but the reader's own one-line error, and the cases add less than
    `FUZZ_GROWTH_MB` to the child's resident memory."""
    out = subprocess.run([sys.executable, str(REPO / "tests" / "fuzz_readers.py"), kind, FUZZ_SEED,
                          str(FUZZ_CASES), str(tmp_path)], capture_output=True, text=True,
                         timeout=1800, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    current = (tmp_path / "current").read_text().strip() if (tmp_path / "current").exists() \
        else "?"
    assert out.returncode >= 0, f"killed by signal {-out.returncode} at case {current}"
    bad = [line for line in out.stdout.splitlines() if line.startswith("BAD")]
    assert not bad, bad[:10]
    assert out.returncode == 0, out.stderr[-3000:]
    done = out.stdout.strip().splitlines()[-1]
    assert done.startswith(f"DONE {FUZZ_CASES} cases, 0 bad"), done
    grew = float(done.rsplit("grew ", 1)[1].split()[0])
    assert grew < FUZZ_GROWTH_MB, done
