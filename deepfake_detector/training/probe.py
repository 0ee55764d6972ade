"""The recipe chosen out of domain: a frozen Whisper encoder and a strongly regularized linear
probe, fitted in closed form and written as a run folder every script uses.

Every recording is embedded once: the mean over time of the encoder's output on each window of
`features.CLIP_SAMPLES` samples (at most `MAX_WINDOWS`, no overlap), averaged over its windows.
A logistic regression (scikit-learn; standardized features, classes balanced, inverse L2
strength `PROBE_C`) is fitted on a random ``1 - VALIDATION`` share of the recordings; its
decision threshold is the EER point of the rest (held out of the fit). The probe was chosen by
`scripts/leave_sources_out.py` (docs/recipes.md, "Leaving sources out"): trained on some
corpora and synthesizers, tested on others, a strong L2 penalty kept to what they share
(28.2% EER and 78.5% of the genuine recordings accepted out of domain, against 37.3% and 63.6%
at scikit-learn's default C = 1).

The run folder holds the probe as a Keras model of the Whisper family with no hidden layer
(`models.whisper.build_whisper` with ``dense_units=0``: waveform -> log-mel -> encoder ->
mean over time -> Dense(1, sigmoid)), the standardization folded into the output layer, so
predict.py, serve.py and evaluate.py score it like any run. A recording of several windows
is judged by the default window rule (``aggregate`` in its metadata: `aggregate.DEFAULT`, 4
consecutive spoof-like windows): on long recordings it raised no false alarm and found 8 of 18
spliced 10-s stretches where the mean of the windows, the rule runs wrote before, found none
(docs/recipes.md, "Long recordings").

With an expert run (``train_offline.py --fuse``, the imported AASIST) the run is the **gated
fusion** of both (`fused_model`): a second logistic regression on the same embedding, the
gate, learns which recordings are of the expert's own corpus, and the expert decides where the
gate is at least `GATE_AT` sure, the probe elsewhere.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from .. import aggregate, features
from ..evaluation import metrics
from ..atomic import write_json_atomic

# -----------------------------------------------------------------------------
PROBE_C = 3e-4  # inverse L2 strength (module docstring; docs/recipes.md)
VALIDATION = 0.2  # share of the training recordings that choose the threshold
MAX_WINDOWS = 8  # windows per recording embedded (8 x ~4 s: the first 32 s)
BATCH = 16
SAVE_EVERY = 100  # recordings embedded between two saves of the cache (resumable)
# the gated fusion (`fit_gate`): the imported AASIST decides where the gate, a logistic
# regression on the same embedding, is at least GATE_AT sure the recording is of AASIST's own
# training corpus (ASVspoof 2019 LA), the probe elsewhere; GATE_STEEPNESS makes the sigmoid of
# the saved model a step in practice. Measured (docs/recipes.md, "Leaving sources out"): 0.9
# keeps AASIST's strength on ASVspoof (2.0% EER on the mini dev part, the probe alone 36%) at a
# cost out of domain (31.5% EER and 74.3% genuine accepted, the probe alone 28.2% and 78.5%)
GATE_AT = 0.9
GATE_STEEPNESS = 20.0
GATE_C = 1.0
# P(spoof) within this of the threshold is shown as uncertain (`display.display`): the probe's
# P(spoof) is compressed (a strong penalty keeps its log-odds small); out of domain this band
# held 24.5% of the left-out recordings, 41.7% of them answered wrongly against 20.9% of the rest
# (docs/recipes.md, "Leaving sources out")
UNCERTAIN_MARGIN = 0.1
# -----------------------------------------------------------------------------


def window_batches(path, window=features.CLIP_SAMPLES, max_windows=MAX_WINDOWS):
    """The windows of one recording, shape (n, window), float32, at most ``max_windows``
    (the last one repeat-padded, as in training)."""
    y = features.load_audio(path)
    n = max(1, min(max_windows, len(y) // window))
    return np.stack([features.fit_length(y[i * window:(i + 1) * window], window)
                     for i in range(n)]).astype(np.float32)


def encoder_parts(preset):
    """The frozen encoder of a Whisper preset and its log-mel layer, built once."""
    from ..models import whisper

    enc, front = whisper.whisper_encoder(str(preset))
    return enc, whisper.log_mel_layer(front)


def embed(paths, preset, progress=True, parts=None):
    """Embed recordings with a frozen Whisper encoder.

    Parameters
    ----------
    paths : list of str
    preset : str or Path
        A Whisper preset (`models.whisper.whisper_encoder`).
    parts : tuple, optional
        `encoder_parts` of ``preset``, when the caller has built them.

    Returns
    -------
    x : np.ndarray, shape (n, 2, hidden), float32
        Per recording: ``[0]`` the mean over its windows of the time-mean encoder output (what
        the probe reads), ``[1]`` the same of its first window alone (what a window of
        predict.py looks like: the familiarity reference). A recording that cannot be read
        gets rows of NaN and a warning naming it.
    """
    from tqdm import tqdm

    enc, layer = parts or encoder_parts(preset)
    out = np.full((len(paths), 2, enc.output_shape[-1]), np.nan, np.float32)
    for i, path in enumerate(tqdm(paths, desc="embedding", unit="file", disable=not progress)):
        try:
            x = window_batches(path)
        except (features.AudioError, OSError, ValueError) as e:
            print(f"warning: {path}: {e}; left out", file=sys.stderr)
            continue
        vectors = np.concatenate([np.asarray(enc(layer(x[j:j + BATCH]))).mean(axis=1)
                                  for j in range(0, len(x), BATCH)])
        out[i] = vectors.mean(axis=0), vectors[0]
    return out


def cached_embeddings(paths, preset, cache_dir, progress=True):
    """`embed` each file once per preset, resumably (`cached_rows`: ``<cache_dir>/
    embeddings.npz``, recomputed when the preset's import.json sha256 or the windowing
    differ).

    Returns
    -------
    x : np.ndarray, shape (len(paths), 2, hidden)
        As `embed`, in the order of ``paths``.
    """
    preset = Path(str(preset))
    record = {"preset": str(preset.resolve()),
              "weights": json.loads((preset / "import.json").read_text())["sha256"]
              if (preset / "import.json").is_file() else None,
              "window": features.CLIP_SAMPLES, "max_windows": MAX_WINDOWS, "layout": "mean,first"}
    state = {}

    def compute(chunk):
        if "parts" not in state:
            state["parts"] = encoder_parts(preset)
        return embed(chunk, preset, progress, state["parts"])

    return cached_rows(paths, Path(cache_dir) / "embeddings", record, compute)


def expert_logits(paths, run_dir, cache_dir, progress=True):
    """The log-odds of spoof of a run (the expert of a fusion) for each file: the mean over its
    windows (at most `MAX_WINDOWS` of the run's window, as predict.py reads them:
    `features.waveform_window`), shape (n,); cached as `cached_rows` ``<cache_dir>/expert.npz``
    (recomputed when the run's model file changes; the model is loaded only when a file is not
    cached); NaN for a file that cannot be read."""
    from tqdm import tqdm

    from .. import familiarity, inference, runs

    run = runs.Run(run_dir)  # raises why the run cannot be used; the model loads when needed
    window = int(run.features["clip_samples"])
    record = {"run": str(run.path.resolve()), "window": window, "max_windows": MAX_WINDOWS,
              **familiarity.model_stamp(run.model_path)}
    state = {}

    def compute(chunk):
        if "detector" not in state:
            state["detector"] = inference.Detector(run)
        detector = state["detector"]
        out = np.full((len(chunk),), np.nan, np.float32)
        for i, path in enumerate(tqdm(chunk, desc="expert", unit="file", disable=not progress)):
            try:
                w = window_batches(path, window)
            except (features.AudioError, OSError, ValueError) as e:
                print(f"warning: {path}: {e}; left out", file=sys.stderr)
                continue
            out[i] = np.mean(detector.logits(np.stack([features.waveform_window(
                row, detector.features) for row in w])))
        return out

    return cached_rows(paths, Path(cache_dir) / "expert", record, compute)


def cached_rows(paths, stem, record, compute):
    """One row of ``compute(paths)`` per file, computed once: ``<stem>.npz`` keeps every row
    under its file's key (resolved path and size) beside ``<stem>.json`` (``record``: what
    made them). Kept rows are reused and the others computed (a source added later computes
    only its files), saved atomically every `SAVE_EVERY` files (resumable); all recomputed
    when the record differs. Returns the rows in the order of ``paths``."""
    keys = [f"{Path(p).resolve()}\t{Path(p).stat().st_size if Path(p).exists() else -1}"
            for p in paths]
    cache, meta = Path(f"{stem}.npz"), Path(f"{stem}.json")
    kept = {}
    if cache.is_file() and meta.is_file() and json.loads(meta.read_text()) == record:
        with np.load(cache, allow_pickle=False) as z:
            kept = dict(zip(z["keys"].tolist(), z["x"]))
    todo = [i for i, k in enumerate(keys) if k not in kept]
    for start in range(0, len(todo), SAVE_EVERY):
        chunk = todo[start:start + SAVE_EVERY]
        fresh = compute([str(paths[i]) for i in chunk])
        kept.update({keys[i]: row for i, row in zip(chunk, fresh)})
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.tmp.npz")
        np.savez(tmp, keys=np.array(list(kept)), x=np.stack(list(kept.values())))
        tmp.replace(cache)
        write_json_atomic(meta, record)
    return np.stack([kept[k] for k in keys])


def fit_probe(x, y, seed=0, c=PROBE_C, validation=VALIDATION):
    """Fit the probe on a random share of the recordings and choose its threshold on the rest.

    Parameters
    ----------
    x : np.ndarray, shape (n, hidden)
        Embeddings (`embed` ``[:, 0]``).
    y : np.ndarray of {0, 1}, shape (n,)
        1 = spoof.
    seed : int
        Seed of the stratified validation draw.
    c : float
        Inverse L2 strength (scikit-learn's ``C``) on standardized features.

    Returns
    -------
    fitted : dict
        ``probe`` (the scikit-learn pipeline), ``fit_rows`` and ``val_rows`` (indices),
        ``threshold`` (on P(spoof): spoof at or above it, the EER point of the validation
        rows), ``calibration`` (`metrics.calibrate_threshold`'s record of it), ``val_score``
        (log-odds of bonafide of the validation rows).

    Raises
    ------
    ValueError
        Fewer than 5 recordings of a class: too few to fit and to hold a share out.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 5:
        raise ValueError(f"{counts[0]} bonafide and {counts[1]} spoof recordings: the probe "
                         "needs at least 5 of each (a share is held out for the threshold)")
    fit_rows, val_rows = train_test_split(np.arange(len(y)), test_size=validation,
                                          random_state=seed, stratify=y)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000,
                                                               class_weight="balanced"))
    probe.fit(x[fit_rows], y[fit_rows])
    # the EER point of the validation part, on its log-odds of bonafide (higher = bonafide)
    score = -probe.decision_function(x[val_rows])
    cal = metrics.calibrate_threshold(y[val_rows], score, "eer")
    return {"probe": probe, "fit_rows": fit_rows, "val_rows": val_rows,
            "threshold": cal["threshold"], "calibration": cal, "val_score": score}


def output_weights(probe):
    """The probe's standardization and logistic regression folded into one affine map of the
    raw embedding: kernel (hidden, 1) and bias (1,), float32, with
    ``x @ kernel + bias == probe.decision_function(x)``."""
    scaler, lr = probe[0], probe[-1]
    coef = lr.coef_[0] / scaler.scale_
    bias = lr.intercept_[0] - float(coef @ scaler.mean_)
    return coef[:, None].astype(np.float32), np.array([bias], np.float32)


def probe_model(preset, probe):
    """The probe as a Keras model of the Whisper family: waveform (batch, CLIP_SAMPLES) ->
    P(spoof) (batch, 1); see the module docstring."""
    from ..models import whisper

    model = whisper.build_whisper(str(preset), (features.CLIP_SAMPLES,), dense_units=0)
    model.get_layer("p_spoof").set_weights(list(output_weights(probe)))
    return model


def fit_gate(x, domain, c=GATE_C):
    """Where to trust the fused expert: a logistic regression (standardized, balanced) telling
    recordings of its training corpus (``domain`` 1) from the others, on the embeddings ``x``
    (n, hidden). Raises ValueError without both kinds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    domain = np.asarray(domain).astype(int)
    if domain.min() == domain.max():
        raise ValueError("the gate needs recordings of the fused model's own training corpus "
                         "(an ASVspoof 2019 protocol) and others")
    gate = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000,
                                                              class_weight="balanced"))
    return gate.fit(x, domain)


def fused_logits(fitted, gate, x, expert_logit, expert_threshold=0.5):
    """The gated fusion's log-odds of spoof, decided at 0 (spoof above).

    Parameters
    ----------
    fitted : dict
        `fit_probe`'s result: the probe's log-odds shifted by its own threshold.
    gate : sklearn pipeline or None
        `fit_gate`'s result (None: the probe alone).
    x : np.ndarray, shape (n, hidden)
    expert_logit : np.ndarray, shape (n,)
        The fused expert's (AASIST's) log-odds of spoof of the same recordings.
    expert_threshold : float
        Its own threshold on P(spoof).

    Returns
    -------
    z : np.ndarray, shape (n,)
        ``g * expert + (1 - g) * probe``, each shifted by its threshold, with ``g`` the
        steep sigmoid of the gate's log-odds at `GATE_AT`.
    """
    from scipy.special import expit, logit

    zp = fitted["probe"].decision_function(x) - logit(fitted["threshold"])
    if gate is None:
        return zp
    g = expit(GATE_STEEPNESS * (gate.decision_function(x) - logit(GATE_AT)))
    return zp + g * (np.asarray(expert_logit) - logit(expert_threshold) - zp)


def fused_model(preset, fitted, gate, expert, expert_threshold=0.5):
    """The gated fusion as one Keras model: waveform (batch, 64600) -> P(spoof) (batch, 1).

    The Whisper branch reads the first `features.CLIP_SAMPLES` samples (the probe's window),
    the expert (a loaded AASIST model, up to its output layer) all 64,600; ``probe``, ``gate``
    and ``expert_logit`` are Dense layers holding `fused_logits`' terms, and the output layer
    ``p_spoof`` reads the embedding followed by the fused log-odds (kernel 0 on the
    embedding), so the run's familiarity reference is the embedding's.
    """
    from scipy.special import logit

    from ..models import whisper
    from ..models.common import load_tensorflow

    _, keras = load_tensorflow()
    from keras import layers

    samples = int(expert.input_shape[-1])
    inputs = keras.Input(shape=(samples,), name="waveform")
    x = layers.Reshape((samples, 1), name="to_channels_w")(inputs)
    x = layers.Cropping1D((0, samples - features.CLIP_SAMPLES), name="whisper_window")(x)
    x = layers.Reshape((features.CLIP_SAMPLES,), name="from_channels_w")(x)
    h = whisper.pooled_encoder(str(preset), x)
    z_probe = layers.Dense(1, name="probe")(h)
    g = layers.Dense(1, activation="sigmoid", name="gate")(h)
    hidden = keras.Model(expert.input, expert.get_layer("p_spoof").input, name="expert")
    z_expert = layers.Dense(1, name="expert_logit")(hidden(inputs))
    fused = layers.Add(name="fused_logit")([z_probe, layers.Multiply(name="gated")(
        [g, layers.Subtract(name="expert_minus_probe")([z_expert, z_probe])])])
    out = layers.Dense(1, activation="sigmoid", name="p_spoof")(
        layers.Concatenate(name="embedding_and_fused")([h, fused]))
    model = keras.Model(inputs, out, name="gated_fusion")
    kernel, bias = output_weights(fitted["probe"])
    model.get_layer("probe").set_weights([kernel, bias - np.float32(logit(fitted["threshold"]))])
    gk, gb = output_weights(gate)
    model.get_layer("gate").set_weights([GATE_STEEPNESS * gk,
                                         GATE_STEEPNESS * (gb - np.float32(logit(GATE_AT)))])
    ek, eb = expert.get_layer("p_spoof").get_weights()
    model.get_layer("expert_logit").set_weights([ek, eb - np.float32(logit(expert_threshold))])
    d = kernel.shape[0]
    model.get_layer("p_spoof").set_weights([np.r_[np.zeros((d, 1)), [[1.0]]].astype(np.float32),
                                            np.zeros(1, np.float32)])
    return model


def write_run(run_dir, preset, fitted, x, y, trained_on, args, gate=None, expert=None):
    """Write the run folder of a fitted probe.

    Parameters
    ----------
    run_dir : str or Path
    preset : str or Path
        The Whisper preset the embeddings came from.
    fitted : dict
        `fit_probe`'s result.
    x : np.ndarray, shape (n, 2, hidden)
        The embeddings (`embed`) of the recordings ``fitted`` indexes.
    y : np.ndarray of {0, 1}, shape (n,)
    trained_on : list of dict
        What the recordings were: ``folder`` (protocol), ``utterances``, ``protocol``.
    args : dict
        The command's arguments, kept in config.json.
    gate, expert : optional
        The gated fusion (`fused_model`): `fit_gate`'s result and the expert run as
        ``{"model", "meta", "run", "threshold"}`` (a loaded AASIST run).

    Returns
    -------
    threshold : dict
        What ``threshold.json`` holds for ``best``.
    """
    from .. import familiarity, models as M, runs

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("threshold.json", familiarity.FILE):
        (run_dir / stale).unlink(missing_ok=True)  # never beside new weights
    head = {"kind": "linear probe", "C": fitted["probe"][-1].C}
    if gate is None:
        model = probe_model(preset, fitted["probe"])
        params = features.feature_params("window", "waveform", features.CLIP_SAMPLES)
    else:
        model = fused_model(preset, fitted, gate, expert["model"], expert["threshold"])
        params = expert["meta"]["features"]
        head.update(kind="gated fusion of a linear probe and the run's expert", gate_at=GATE_AT,
                    gate_c=gate[-1].C, expert={"run": str(expert["run"]),
                                               "threshold": expert["threshold"],
                                               "weights": expert["meta"].get("weights")})
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    # "whisper": loading needs KerasHub's layers (the fused model holds both families')
    meta = {"features": params, "labels": runs.LABELS, "input": M.input_spec("whisper", params),
            "model": "whisper", "run": run_dir.name, "preset": str(preset), "head": head,
            "aggregate": aggregate.DEFAULT, "uncertain_margin": UNCERTAIN_MARGIN,
            "trained_on": {"data": trained_on, "synthetic_demo": False}}
    M.save_model_atomic(model, run_dir / "best.keras", meta)
    write_json_atomic(run_dir / "config.json", {
        "args": {**args, "model": "whisper", "preset": str(preset)}, "features": params,
        "labels": runs.LABELS, "input": meta["input"], "head": meta["head"],
        "split": {"train": len(fitted["fit_rows"]), "validation": len(fitted["val_rows"])},
        "params": M.param_counts(model), "versions": runs.versions(), "created": created,
        "command": " ".join(sys.argv)})
    yv, score = y[fitted["val_rows"]], fitted["val_score"]
    if gate is not None:
        cal = {"method": "gated", "threshold": 0.5, "score_threshold": 0.0, "model": "best.keras",
               "note": "spoof when the fused log-odds are above 0: the probe's share at its "
                       f"EER threshold ({fitted['threshold']:.4g}, chosen on {len(yv)} "
                       "held-out recordings), the expert's at its own "
                       f"({expert['threshold']:.4g}), where the gate trusts it"}
        write_json_atomic(run_dir / "threshold.json", {"best": cal})
        fit_familiarity(run_dir, fitted, x, trained_on)
        return cal
    cal = dict(fitted["calibration"])
    cal.update(model="best.keras", note=f"the EER point of the validation part ({len(yv)} "
               "recordings held out of the fit, of the kinds trained on)")
    cal["validation"] = {"at_0.5": metrics.binary_metrics(yv, metrics.sigmoid(-score), 0.5),
                         "calibrated": metrics.classification_metrics(
                             yv, score < cal["score_threshold"])}
    write_json_atomic(run_dir / "threshold.json", {"best": cal})
    fit_familiarity(run_dir, fitted, x, trained_on)
    return cal


def fit_familiarity(run_dir, fitted, x, trained_on):
    """``familiarity.npz`` of a probe run: the first-window embeddings of its fitted and
    validation recordings (what one window of predict.py gives)."""
    from .. import familiarity

    fam = familiarity.fit(x[fitted["fit_rows"], 1], x[fitted["val_rows"], 1])
    return familiarity.save(run_dir, fam, Path(run_dir) / "best.keras",
                            {"data": [d["folder"] for d in trained_on],
                             "train": len(fitted["fit_rows"]), "dev": len(fitted["val_rows"]),
                             "vectors": "first window of each recording"})
