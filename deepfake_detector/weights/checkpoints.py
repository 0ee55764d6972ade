"""The official AASIST checkpoints: where they come from, and turning one into a Keras model.

A SOURCE is a local ``.pth`` (its configuration read from the ``.conf`` beside it, or given),
or one of the names of `OFFICIAL`. A name is looked for in the folders of ``$AASIST_WEIGHTS``
(``:``-separated) and ``~/.cache/deepfake_detector/aasist``; when absent it is downloaded from
its repository at a pinned commit into that cache and its sha256 checked before use.
"""

import json
import math
import os
from pathlib import Path

import numpy as np

from . import pth
from ..atomic import sha256
from ..models import aasist

# -----------------------------------------------------------------------------
CACHE = Path("~/.cache/deepfake_detector/aasist").expanduser()
LICENCE = ("MIT (Copyright (c) 2021-present NAVER Corp.); AASIST, Jung et al., ICASSP 2022; "
           "keep this attribution when redistributing the weights")
_RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
MAX_DOWNLOAD = 64 << 20
OFFICIAL = {
    "AASIST": {"repo": "clovaai/aasist", "commit": "a04c986",
               "path": "models/weights/AASIST.pth", "config": "AASIST",
               "sha256": "51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0",
               "trained_on": "ASVspoof 2019 LA train"},
    "AASIST-L": {"repo": "clovaai/aasist", "commit": "a04c986",
                 "path": "models/weights/AASIST-L.pth", "config": "AASIST-L",
                 "sha256": "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a",
                 "trained_on": "ASVspoof 2019 LA train"},
    "AASIST-ASVspoof5": {"repo": "asvspoof-challenge/asvspoof5", "commit": "fe23d30",
                         "path": "Baseline-AASIST/models/weights/AASIST/best.pth",
                         "config": "AASIST",
                         "sha256": "8f10fe1d1ce3ac62c19f00b86dfaf79f86f464301d23e08726b16b02edbb601c",
                         "trained_on": "ASVspoof 5 train"},
}
# -----------------------------------------------------------------------------


IGNORED = (".bn1.", "num_batches_tracked")  # unused by the official forward pass; counters


class ArchitectureMismatch(ValueError):
    """A checkpoint whose tensors do not fit the model (another architecture or config)."""


def _same(w):
    return w


def _torch_targets(model):
    """Official state_dict name -> (Keras variable, transform of the official array)."""
    dense_t = lambda w: w.T  # noqa: E731 - Linear (out, in) -> Dense kernel (in, out)
    # Conv2d (out, in, freq, time) -> Conv2D (time, freq, in, out)
    conv_t = lambda w: w.transpose(3, 2, 1, 0)  # noqa: E731
    same = _same
    out = {}

    def bn(prefix, layer):
        for torch_name, var in zip(("weight", "bias", "running_mean", "running_var"),
                                   (layer.gamma, layer.beta, layer.moving_mean,
                                    layer.moving_variance)):
            out[f"{prefix}.{torch_name}"] = (var, same)

    def dense(prefix, layer):
        out[f"{prefix}.weight"] = (layer.kernel, dense_t)
        out[f"{prefix}.bias"] = (layer.bias, same)

    bn("first_bn", model.get_layer("first_bn"))
    for i in range(6):
        p = f"encoder.{i}.0"
        for conv in ("conv1", "conv2", "conv_downsample"):
            try:
                layer = model.get_layer(f"encoder{i}_{conv}")
            except ValueError:
                continue
            out[f"{p}.{conv}.weight"] = (layer.kernel, conv_t)
            out[f"{p}.{conv}.bias"] = (layer.bias, same)
        bn(f"{p}.bn2", model.get_layer(f"encoder{i}_bn2"))
    graph = model.get_layer("graph")
    for name in ("pos_S", "master1", "master2"):
        out[name] = (getattr(graph, name), same)
    for gat in ("GAT_layer_S", "GAT_layer_T", "HtrgGAT_layer_ST11", "HtrgGAT_layer_ST12",
                "HtrgGAT_layer_ST21", "HtrgGAT_layer_ST22"):
        layer = getattr(graph, gat)
        for attr, value in vars(layer).items():
            if attr.startswith("att_weight"):
                out[f"{gat}.{attr}"] = (value, same)
            elif attr.startswith(("proj", "att_proj")):
                dense(f"{gat}.{attr}", value)
        bn(f"{gat}.bn", layer.bn)
    for pool in ("pool_S", "pool_T", "pool_hS1", "pool_hT1", "pool_hS2", "pool_hT2"):
        dense(f"{pool}.proj", getattr(graph, pool).proj)
    return out


def load_state_dict(model, state, source="checkpoint"):
    """Set the weights of an AASIST model (`build_aasist`) from an official PyTorch state_dict
    (`deepfake_detector.weights.pth.read_state_dict`).

    The two-logit output layer (``out_layer``, rows spoof and bonafide) becomes ``p_spoof``:
    kernel ``w_spoof - w_bonafide``, bias ``b_spoof - b_bonafide`` (module docstring).

    Raises
    ------
    ArchitectureMismatch
        A tensor missing, left over or of another shape than the model's (one line, naming the
        first problem and the count).
    """
    targets = _torch_targets(model)
    used = {k for k in state if not any(s in k for s in IGNORED)}
    head_names = {"out_layer.weight", "out_layer.bias"}
    missing = sorted((set(targets) | head_names) - used)
    extra = sorted(used - set(targets) - head_names)
    if missing or extra:
        what = (f"{len(missing)} tensor(s) the model needs are missing (first: {missing[0]})"
                if missing else f"{len(extra)} tensor(s) the model does not have (first: "
                                f"{extra[0]})")
        raise ArchitectureMismatch(f"{source}: not an AASIST checkpoint of this configuration: "
                                   f"{what}")
    values = []
    for name in sorted(used):
        with np.errstate(over="ignore", invalid="ignore"):  # float32 overflow is inf too
            finite = np.isfinite(np.asarray(state[name]).astype(np.float32)).all()
        if not finite:
            raise ArchitectureMismatch(f"{source}: tensor {name} holds NaN or infinite values "
                                       "(a damaged or crafted checkpoint); not imported")
    for name, (var, transform) in targets.items():
        value = transform(np.asarray(state[name], np.float32))
        if tuple(value.shape) != tuple(var.shape):
            # the transforms other than the identity reverse the axes (Linear, Conv2d kernels)
            want = tuple(var.shape) if transform is _same else tuple(var.shape)[::-1]
            raise ArchitectureMismatch(
                f"{source}: tensor {name} has shape {tuple(state[name].shape)}, this "
                f"configuration needs {want}: another AASIST configuration (pass its .conf "
                "with --conf, or --preset AASIST-L)")
        values.append((var, value))
    w, b = np.asarray(state["out_layer.weight"]), np.asarray(state["out_layer.bias"])
    head = model.get_layer("p_spoof")
    if w.shape != (2, head.kernel.shape[0]) or b.shape != (2,):
        raise ArchitectureMismatch(f"{source}: out_layer has shape {w.shape}, expected "
                                   f"(2, {head.kernel.shape[0]})")
    for var, value in values:
        var.assign(value)
    head.kernel.assign((w[0] - w[1])[:, None].astype(np.float32))
    head.bias.assign(np.array([b[0] - b[1]], np.float32))
    return model


def _ints(value, n, low, high):
    return (isinstance(value, list) and len(value) == n
            and all(type(v) is int and low <= v <= high for v in value))


def _reals(value, n, low, high, low_open=True):
    return (isinstance(value, list) and len(value) == n
            and all(type(v) in (int, float) and math.isfinite(v)
                    and (low < v if low_open else low <= v) and v <= high for v in value))


def check_config(cfg):
    """Refuse a model_config outside what the architecture admits, naming the key: sizes are
    integers (``first_conv`` 3-1024 taps, ``filts[0]`` 8-512 sinc filters, channel pairs
    1-1024 chained from one input channel), ``gat_dims`` two integers 1-1024,
    ``pool_ratios`` four in (0, 1] (0 keeps no node: a degenerate graph), ``temperatures``
    four finite, positive numbers up to 1e4."""
    filts = cfg["filts"]
    problems = []
    if type(cfg["first_conv"]) is not int or not 3 <= cfg["first_conv"] <= 1024:
        problems.append(f"first_conv = {str(cfg['first_conv'])[:20]} (an integer 3-1024)")
    if not (isinstance(filts, list) and len(filts) == 5 and type(filts[0]) is int
            and 8 <= filts[0] <= 512 and all(_ints(f, 2, 1, 1024) for f in filts[1:])):
        problems.append(f"filts = {str(filts)[:60]} (an integer 8-512, then four [in, out] "
                        "pairs of 1-1024)")
    elif (filts[1][0] != 1 or any(filts[i][1] != filts[i + 1][0] for i in range(1, 4))
          or filts[4][0] != filts[4][1]):
        problems.append(f"filts = {filts} (the channels must chain: [1, a], [a, b], [b, c], "
                        "[c, c])")
    if not _ints(cfg["gat_dims"], 2, 1, 1024):
        problems.append(f"gat_dims = {str(cfg['gat_dims'])[:40]} (two integers 1-1024)")
    if not _reals(cfg["pool_ratios"], 4, 0, 1):
        problems.append(f"pool_ratios = {str(cfg['pool_ratios'])[:60]} (four numbers in (0, 1])")
    if not _reals(cfg["temperatures"], 4, 0, 1e4):
        problems.append(f"temperatures = {str(cfg['temperatures'])[:60]} (four finite numbers "
                        "above 0, at most 1e4)")
    if problems:
        raise ValueError("not an AASIST model_config this architecture admits: "
                         + "; ".join(problems))
    return cfg


class CheckpointUnavailable(RuntimeError):
    """A named checkpoint that is neither on disk nor downloadable (offline)."""


def search_dirs():
    """Folders where named checkpoints are looked for: ``$AASIST_WEIGHTS``, then the cache."""
    env = [Path(p).expanduser() for p in os.environ.get("AASIST_WEIGHTS", "").split(":") if p]
    return [*env, CACHE]


def _download(name, info):
    """Fetch an official checkpoint into the cache, checking its sha256."""
    import urllib.request

    url = _RAW.format(**info)
    dest = CACHE / f"{name}.pth"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            data = r.read(MAX_DOWNLOAD + 1)  # the checkpoints are 0.4-1.3 MB
            if len(data) > MAX_DOWNLOAD:
                raise OSError(f"more than {MAX_DOWNLOAD >> 20} MB: not the checkpoint")
            f.write(data)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointUnavailable(
            f"checkpoint {name} is not on disk and could not be downloaded from {url} ({e}).\n"
            f"Fix: on a machine with a network, download that file, then copy it here as "
            f"{dest} (or into a folder named by $AASIST_WEIGHTS), or pass the .pth path "
            "itself.") from None
    if sha256(tmp) != info["sha256"]:
        tmp.unlink(missing_ok=True)
        raise CheckpointUnavailable(f"{url}: sha256 differs from the pinned one; not used")
    tmp.replace(dest)
    return dest


def resolve(source, conf=None):
    """Where a checkpoint is and which AASIST configuration it has.

    Parameters
    ----------
    source : str or Path
        A ``.pth`` path, or a name of `OFFICIAL` (found on disk, else downloaded).
    conf : str or Path, optional
        The official ``.conf`` (JSON with ``model_config``) of a local ``.pth``; default the
        ``.conf`` beside it with the same stem, else the AASIST configuration.

    Returns
    -------
    path : Path
    config : dict
        The model_config (`aasist.resolve_config`).
    info : dict
        ``source``, ``sha256``, ``licence``, and for names ``file`` (the local copy used: found
        in `search_dirs` or downloaded), ``url`` (where the official copy lives) and
        ``trained_on``.
    """
    text = str(source)
    if text in OFFICIAL:
        info = OFFICIAL[text]
        found = [d / f"{text}.pth" for d in search_dirs() if (d / f"{text}.pth").is_file()]
        # the first copy with the pinned sha256: a wrong one earlier in $AASIST_WEIGHTS is
        # passed over (and named if no copy is right)
        path = next((p for p in found if sha256(p) == info["sha256"]), None)
        if path is None and found:
            raise CheckpointUnavailable(
                f"{found[0]}: sha256 {sha256(found[0])[:12]}... is not that of the official "
                f"{text} ({info['sha256'][:12]}...)"
                + (f", nor are the {len(found) - 1} other copies" if len(found) > 1 else ""))
        path = path or _download(text, info)
        digest = sha256(path)
        return path, aasist.resolve_config(info["config"]), {
            "source": text, "file": str(Path(path).resolve()), "url": _RAW.format(**info),
            "sha256": digest, "trained_on": info["trained_on"], "licence": LICENCE}
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {text} not found (a .pth file, or one of "
                                f"{', '.join(OFFICIAL)})")
    if conf is not None and not Path(conf).is_file():  # a typo must not fall back silently
        raise FileNotFoundError(f"--conf {conf}: no such file (the official .conf of "
                                f"{path.name})")
    conf = Path(conf) if conf else path.with_suffix(".conf")
    config = aasist.resolve_config("AASIST")
    if conf.is_file():
        try:
            config = check_config(aasist.resolve_config(
                json.loads(conf.read_bytes().decode("utf-8"))["model_config"]))
        except (ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"{conf}: not an AASIST configuration file "
                             f"({type(e).__name__}: {str(e)[:300]})") from None
    digest = sha256(path)
    known = [name for name, o in OFFICIAL.items() if o["sha256"] == digest]
    info = {"source": str(path.resolve()), "sha256": digest,
            "config_file": str(conf) if conf.is_file() else None, "licence": LICENCE}
    if known:  # an official checkpoint by its digest: what it was trained on is known
        info.update(official=known[0], trained_on=OFFICIAL[known[0]]["trained_on"])
    return path, config, info


def load_keras(source, conf=None, input_shape=(aasist.SAMPLES,)):
    """An AASIST Keras model with the weights of ``source`` (`resolve`).

    Returns
    -------
    model : keras.Model
    config : dict
    info : dict
    state : dict of np.ndarray
        The checkpoint's tensors (the two-logit output layer among them).

    Raises
    ------
    pth.CheckpointError, aasist.ArchitectureMismatch, CheckpointUnavailable
    """
    path, config, info = resolve(source, conf)
    state = pth.read_state_dict(path)
    model = aasist.build_aasist(config, input_shape)
    load_state_dict(model, state, str(path))
    return model, config, info, state


def init_weights(model, source, preset="AASIST"):
    """``train.py --model aasist --init SOURCE``: set ``model``'s weights (every layer, the
    fixed sinc filters included) from a run folder (its ``best.keras``, e.g. an imported one)
    or an official checkpoint (`resolve`).

    Raises
    ------
    ValueError
        A source of another AASIST configuration than ``preset`` (naming the ``--preset`` to
        pass), or a run of another family.
    """
    from .. import runs

    want = aasist.resolve_config(preset)
    if Path(str(source)).is_dir():
        run = runs.Run(source)  # the family checked before the model loads
        meta, path = run.meta, run.model_path
        saved = meta.get("preset")
        if meta.get("model") != "aasist" or not (saved == preset or isinstance(saved, dict)
                                                 and aasist.same_architecture(saved, want)):
            raise ValueError(f"--init {source}: {path} is a {meta.get('model')} model of "
                             f"configuration {meta.get('preset')!r}, not AASIST {preset!r}")
        model.set_weights(run.model.get_weights())
        return {"source": str(Path(path).resolve())}
    path, config, info = resolve(source)
    if not aasist.same_architecture(config, want):
        names = [n for n, c in aasist.CONFIGS.items() if aasist.same_architecture(c, config)]
        raise ValueError(f"--init {source} holds the {names[0] if names else 'other'} "
                         f"configuration; pass --preset {names[0] if names else '...'}")
    load_state_dict(model, pth.read_state_dict(path), str(path))
    return info
