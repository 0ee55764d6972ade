"""Run folders (written by train.py and the importers, read by evaluate.py, predict.py and
serve.py as one `Run`, opened once), the decision threshold rule, and the ASVspoof score
convention.

A run folder holds ``model.keras`` (last epoch), ``best.keras`` (best validation epoch),
``threshold.json`` (decision thresholds calibrated on the validation part), ``config.json``,
``history.csv`` and ``split.csv``.

**Decision threshold** (one rule, `decision_threshold`): an explicit ``--threshold``, else the
threshold calibrated on the run's validation data, else 0.5. **Scores** that leave the program
follow ASVspoof: ``score = -logit = log(P(bonafide) / P(spoof))``, higher = more bonafide.
"""

import functools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import datasets, familiarity, features
from .evaluation.calibration import read_calibration
from .evaluation.metrics import THRESHOLD
from .models import (FAMILIES, META_NAME, WeightsUnavailable, load_model, load_tensorflow,
                     read_model_meta)

# -----------------------------------------------------------------------------
RUNS_DIR = "runs"
MODEL_FILES = {"best": "best.keras", "final": "model.keras"}
# the label convention, written into every run's config.json and model
LABELS = {"target": "1 = spoof, 0 = bonafide", "output": "P(spoof)",
          "score": "log-odds of bonafide (higher = more bonafide, ASVspoof convention)"}
# -----------------------------------------------------------------------------


class ModelFileError(ValueError):
    """A model file that cannot be read (truncated, corrupt, not a .keras archive of this
    project)."""


def default_run_dir():
    """``runs/<date-time>``."""
    return Path(RUNS_DIR) / time.strftime("%Y%m%d-%H%M%S")


def is_finished(run_dir):
    """Whether a run folder is complete: a model and its ``threshold.json``, which train.py
    and scripts/import_aasist.py write last (a run stopped by a crash or a full disk before
    that is not finished, whatever model files it holds)."""
    run_dir = Path(run_dir)
    return ((run_dir / "threshold.json").exists() and (run_dir / "config.json").exists()
            and any((run_dir / name).exists() for name in MODEL_FILES.values()))


def find_latest_run(runs_dir=RUNS_DIR):
    """The most recently written finished run folder under ``runs_dir`` (`is_finished`)."""
    runs = [p.parent for p in Path(runs_dir).glob("*/config.json") if is_finished(p.parent)]
    if not runs:
        raise FileNotFoundError(f"no finished run under {runs_dir}/; train one with train.py "
                                "or pass --run")
    return max(runs, key=lambda p: p.stat().st_mtime)


def read_config(run_dir):
    """The run's ``config.json``."""
    return json.loads((Path(run_dir) / "config.json").read_text())


def model_file(run_dir, which="best"):
    """The model file of a run (`load_run`): ``best.keras``, or ``model.keras`` for "final" and
    when no checkpoint exists.

    Raises
    ------
    FileNotFoundError
    """
    run_dir = Path(run_dir)
    path = run_dir / MODEL_FILES[which]
    if which == "best" and not path.exists():
        path = run_dir / MODEL_FILES["final"]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: has {run_dir} finished training?")
    return path


def peek_meta(run_dir, which="best"):
    """The metadata of a run's model without loading the model (None when unreadable or
    invalid: then `Run` says why)."""
    try:
        return Run(run_dir, which).meta
    except Exception:  # noqa: BLE001 - zipfile and JSON raise many types
        return None


def check_meta(meta, path):
    """The metadata of a model file, checked before it is used: feature parameters this project
    could write (`features.check_params`), an input kind that reads arrays of that kind, and
    for a known family, the family's own input. A model file is input like any other.

    Raises
    ------
    ModelFileError
        One line naming the file and the problem.
    """
    if meta is None:
        raise ModelFileError(f"{path} carries no feature parameters ({META_NAME}); it was "
                             "not saved by this project")
    try:
        if not isinstance(meta, dict) or "features" not in meta:
            raise features.FeatureMismatch("no 'features' entry")
        features.check_params(meta["features"])
        kind = input_kind(meta)
        wave = features.feature_kind(meta["features"]) == "waveform"
        if kind not in datasets.INPUTS or (kind == "waveform") != wave:
            raise features.FeatureMismatch(f"input kind {str(kind)[:20]!r} cannot read "
                                           f"{'waveform' if wave else 'mel'} arrays")
        family = meta.get("model")
        if family is not None and (family not in FAMILIES
                                   or FAMILIES[family]["input"] != kind):
            raise features.FeatureMismatch(f"model family {str(family)[:20]!r} does not take "
                                           f"{kind} input")
    except (features.FeatureMismatch, AttributeError, TypeError) as e:
        raise ModelFileError(f"{path}: invalid metadata in {META_NAME}: {e}") from None
    return meta


def load_run(run_dir, which="best"):
    """Load a run's model and its metadata (`Run`, for callers that want the three).

    Returns
    -------
    model : keras.Model
    meta : dict
        Feature parameters, label convention and input transform saved with the model.
    path : Path
    """
    run = Run(run_dir, which)
    return run.model, run.meta, run.model_path


# config.json arguments that may differ between the start of a run and its resumption
RESUMABLE_ARGS = {"run", "overwrite", "quiet", "seeds", "test_data", "cpu_devices"}


def start_run(run_dir, replace, split, run_cfg):
    """Create a run folder, or replace it (``replace``: finished, or ``--overwrite``), or
    resume the unfinished run in it, which must have been started with the same arguments;
    write ``split.csv`` and, unless the frozen phase is done, ``config.json`` (atomically).

    Raises
    ------
    ValueError
        Resuming with other arguments than the run was started with (naming them).
    """
    import shutil

    from .atomic import remove_orphans, write_csv_atomic, write_json_atomic

    run_dir = Path(run_dir)
    if replace and run_dir.exists():
        shutil.rmtree(run_dir)
    resuming = any((run_dir / p).exists() for p in ("backup", "phase1.json", "backup_ft"))
    if resuming and (run_dir / "config.json").exists():
        old, new = (json.loads(json.dumps(c["args"])) for c in (read_config(run_dir), run_cfg))
        changed = sorted(k for k in (set(old) | set(new)) - RESUMABLE_ARGS
                         if old.get(k) != new.get(k))
        if changed:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            raise ValueError(f"{run_dir} holds an unfinished run started with other arguments "
                             f"({detail}); resume it with the same command, or pass "
                             "--overwrite to start it again")
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_orphans(run_dir)  # temporary files of a killed run
    write_csv_atomic(run_dir / "split.csv",
                     split[["utt_id", "part", "label", "attack", "path", "source"]])
    if resuming:
        print(f"resuming {run_dir} from its last finished epoch", file=sys.stderr)
    if not (run_dir / "phase1.json").exists():
        write_json_atomic(run_dir / "config.json", run_cfg)


def read_threshold(run_dir, which="best"):
    """The calibrated threshold train.py saved for ``which`` model of a run
    (``threshold.json``), or None."""
    path = Path(run_dir) / "threshold.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    cal = saved.get(which)
    if cal is None and which == "best" and not (Path(run_dir) / "best.keras").exists():
        cal = saved.get("final")  # load_run falls back the same way
    return cal


# how a saved threshold was chosen, in words: only one fitted on labelled data is "calibrated"
SAVED_THRESHOLD_WORDS = {
    "argmax": "the model's own decision, argmax of its outputs (not calibrated on your data)",
    "gated": "the fused decision at 0: the probe's EER point on its validation part, the "
             "expert's own threshold where the gate trusts it",
}


def saved_threshold_words(saved):
    """What a saved threshold (`read_threshold`) is, for people: ``calibrated on the run's
    validation data (METHOD)`` only for a method fitted on labelled data (``eer``, ``f1``,
    ``far:RATE``); the imported AASIST's ``argmax`` and a fused run's ``gated`` decision say
    what they are instead (`SAVED_THRESHOLD_WORDS`)."""
    method = str(saved.get("method", "?"))
    return SAVED_THRESHOLD_WORDS.get(
        method, f"calibrated on the run's validation data ({method})")


def is_calibrated(saved):
    """Whether a saved threshold was fitted on labelled data (see `saved_threshold_words`)."""
    return saved is not None and str(saved.get("method")) not in SAVED_THRESHOLD_WORDS


def decision_threshold(explicit=None, calibrated=None):
    """The decision threshold on P(spoof): ``explicit`` (``--threshold``), else the calibrated
    one (`read_threshold`), else 0.5.

    Returns
    -------
    threshold : float
    kind : {"explicit", "calibrated", "default"}
        Where it came from (callers say so in their output).
    """
    if explicit is not None:
        return float(explicit), "explicit"
    if calibrated is not None:
        return float(calibrated["threshold"]), "calibrated"
    return THRESHOLD, "default"


# ----------------------------------------------------------------------------- what a run knows


DEMO_WARNING = ("trained on the SYNTHETIC demo corpus (scripts/make_demo_corpus.py): it tells "
                "that corpus's Griffin-Lim spoofs from its formant-synthesized 'bonafide' "
                "speech; its verdicts on real recordings mean nothing")


def trained_on(train_df):
    """What a run was trained on, recorded in config.json and in every saved model: per
    training folder its name, the protocol it was made from and the training utterances it
    gave (``corpus.json`` of `preprocess.py`), and whether any is the synthetic demo corpus.

    Parameters
    ----------
    train_df : pandas.DataFrame
        The training part, with its folder in ``source`` (`datasets.load_sources`).
    """
    data = []
    for folder, part in train_df.groupby("source", sort=False):
        info = datasets.load_corpus_info(folder) or {}
        data.append({"folder": Path(folder).name, "utterances": int(len(part)),
                     "protocol": Path(info["protocol"]).name if info.get("protocol") else None,
                     "synthetic_demo": bool(info.get("synthetic_demo"))})
    return {"data": data, "synthetic_demo": any(d["synthetic_demo"] for d in data)}


def training_summary(meta):
    """One line about what a model was trained on (`trained_on`, from its metadata), and the
    warning a user must see (`DEMO_WARNING`, or the ``caveat`` its maker recorded: an
    imported AASIST's measured failures out of domain) or None. Models saved before runs recorded it:
    "not recorded"."""
    info = (meta or {}).get("trained_on")
    if not info:
        return "training data not recorded (a run made before they were)", None
    parts = ", ".join(d["folder"] + (f" ({d['utterances']} utterances)" if d.get("utterances")
                                     else "") for d in info["data"])
    return f"trained on {parts}", (DEMO_WARNING if info.get("synthetic_demo") else
                                   info.get("caveat") or None)


def heldout_manifest(run_dir, config=None):
    """The manifest rows a run held out: its validation folder(s), or the validation part of its
    80/20 split (from ``split.csv``). ``config``: its ``config.json``, when already read.

    Returns
    -------
    df : pandas.DataFrame
    folders : list of str
        The preprocessed folder(s) those rows come from (their features.json are identical).
    """
    run_dir = Path(run_dir)
    args = (config or read_config(run_dir))["args"]
    if args["val_data"]:
        folders = datasets.as_folders(args["val_data"])
        return datasets.load_sources(folders)[0], folders
    folders = datasets.as_folders(args["data"])
    split = pd.read_csv(run_dir / "split.csv", dtype={"utt_id": str}, keep_default_na=False)
    val_ids = set(split.loc[split["part"] == "val", "utt_id"])
    df, _ = datasets.load_sources(folders)
    return df[df["utt_id"].isin(val_ids)].reset_index(drop=True), folders


def input_kind(meta):
    """How the model of ``meta`` (`load_run`) takes the arrays: ``rgb255`` (EfficientNetB0, and
    models saved before there were other families), ``mel`` or ``waveform``."""
    spec = meta.get("input") or {}
    return spec.get("kind", "rgb255") if isinstance(spec, dict) else None


def versions():
    """Library versions, for config.json."""
    import librosa
    import sklearn

    tf, keras = load_tensorflow()

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "librosa": librosa.__version__,
            "scikit-learn": sklearn.__version__, "pandas": pd.__version__,
            "platform": platform.platform()}


# ----------------------------------------------------------------------------- one run, opened once


class Run:
    """A trained run folder, opened once: what evaluate.py, predict.py, serve.py, the report
    and the importers know of a run. Each of its files is read once, when first needed, and
    kept: the model's metadata (`meta`, checked: `check_meta`), ``config.json`` (`config`),
    the saved threshold (`saved_threshold`), the LLR calibration (`calibration`), the
    familiarity fit (`familiarity`) and the model itself (`model`). Nothing is read before it
    is used: data can be checked against `meta` before a slow model load, and a run scored
    elsewhere (scripts/lfcc_gmm.py, no Keras model) still gives its threshold.

    Parameters
    ----------
    path : str or Path
        The run folder.
    which : {"best", "final"}
        ``best.keras`` (best validation metric; the final model when no checkpoint exists) or
        ``model.keras`` (last epoch).

    Raises
    ------
    FileNotFoundError
        On first use of `model_path`, `meta` or `model`: no model file (`model_file`).
    ModelFileError
        On first use of `meta` or `model`: metadata or weights that cannot be read, or are
        invalid (one line naming the file).
    """

    def __init__(self, path, which="best"):
        self.name = str(path)  # as the user gave it, for reports
        self.path = Path(path)
        self.which = which

    @classmethod
    def of(cls, run, which="best"):
        """``run`` itself when it is already an open `Run` of model ``which``, else
        ``Run(run, which)``."""
        if isinstance(run, cls):
            if run.which != which:
                raise ValueError(f"{run.path} is open for its {run.which!r} model, not {which!r}")
            return run
        return cls(run, which)

    @functools.cached_property
    def model_path(self):
        """The model file (`model_file`)."""
        return model_file(self.path, self.which)

    @functools.cached_property
    def meta(self):
        """The model's metadata, read from its archive and checked (`check_meta`)."""
        return _opened(self.model_path, lambda: check_meta(read_model_meta(self.model_path),
                                                           self.model_path))

    @property
    def features(self):
        """The feature parameters the model was trained on (`features.feature_params`)."""
        return self.meta["features"]

    @property
    def input_kind(self):
        """How the model takes the arrays (`input_kind`)."""
        return input_kind(self.meta)

    @functools.cached_property
    def config(self):
        """``config.json``: the arguments, split and versions the run was made with."""
        return read_config(self.path)

    @functools.cached_property
    def saved_threshold(self):
        """The decision threshold saved for this model (`read_threshold`), or None."""
        return read_threshold(self.path, self.which)

    @functools.cached_property
    def calibration(self):
        """This model's LLR calibration (``calibration.json``, `calibration.read_calibration`),
        or None."""
        return read_calibration(self.path, self.which)

    @functools.cached_property
    def familiarity(self):
        """``(fit, problem)``: the familiarity fit for this model, or None, and why a file
        that exists is not used (`familiarity.load`)."""
        return familiarity.load(self.path, self.model_path)

    @functools.cached_property
    def model(self):
        """The Keras model, loaded once (safe mode; refused when a weight is NaN or
        infinite)."""
        return _opened(self.model_path, lambda: _finite(load_model(self.model_path, self.meta),
                                                        self.model_path))

    def heldout(self):
        """The manifest rows the run held out, and their folders (`heldout_manifest`)."""
        return heldout_manifest(self.path, self.config)


def _finite(model, path):
    bad = next((w.path for w in model.weights if not np.isfinite(np.asarray(w)).all()), None)
    if bad:  # NaN weights give NaN scores, which would read as silence
        raise ModelFileError(f"{path}: weight {bad} holds NaN or infinite values (a damaged or "
                             "crafted model); not used")
    return model


def _opened(path, read):
    """``read()``, with whatever reading a model file raises turned into one `ModelFileError`
    line naming the file."""
    try:
        return read()
    except ModelFileError:
        raise
    except WeightsUnavailable as e:  # a Whisper model without KerasHub installed
        raise ModelFileError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - zipfile, h5py, JSON and Keras raise many types
        raise ModelFileError(f"{path} is not a readable model file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'no detail'}); train "
                             "the run again or use the other model (--model best|final)") \
            from None
