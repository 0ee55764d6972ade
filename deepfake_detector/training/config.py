"""Training options: one dataclass field per train.py flag, with its default and help text.

The command line (`build_parser`), the ``train()`` call and ``config.json`` are all derived from
`TrainConfig`, so adding a training option is one line here plus its use in train.py::

    label_smoothing: float = option(0.0, "label smoothing of the loss", group=RECIPE)

Field names are the argparse destinations; the flag is ``--field-name`` unless ``flag=`` says
otherwise (``--lr``, ``--no-feature-cache``). `check` validates a configuration and names the
offending flag.
"""

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import PurePath

from .. import augment, cli, datasets
from ..evaluation import metrics
from .. import models as M
from .distribute import STRATEGIES

# The recommended recipes without network (scripts/train_offline.py; docs/recipes.md,
# "Robustness": the best out of domain of the measured rows, 3 seeds), both trained on the data
# and their vocoded copies: the imported Whisper tiny.en encoder (--preset), head then top two
# layers fine-tuned (compare_recipes.py whisper_vocoded_ft); with --init, the imported AASIST
# with its encoder frozen and cached, the graph back end fine-tuned (aasist_l_vocoded)
OFFLINE_RECIPE = "--model whisper --fine-tune-blocks 2"
OFFLINE_INIT_RECIPE = "--model aasist --freeze-encoder --batch-size 32"
# validation metric -> (Keras log key, better direction); selects best.keras and early stopping
MONITORS = {"loss": ("val_loss", "min"), "eer": ("val_eer", "min"), "auc": ("val_auc", "max")}
# argument groups of --help
MAIN = None
RECIPE = "class imbalance and decision threshold"
FINE_TUNE = "fine-tuning (second phase, after the frozen epochs)"
AUGMENT = "augmentation (training part only; all off by default)"
SCALE = "speed and scale"


def family_default(key):
    """`` (default per --model: efficientnetb0 X, lcnn Y, ...)`` for a help text: the families
    to which the option applies."""
    values = ", ".join(f"{name} {f['defaults'][key]}" for name, f in M.FAMILIES.items()
                       if f["defaults"][key] is not None)
    return f" (default per --model: {values})"


def option(default, help, *, flag=None, group=MAIN, type=None, **argparse_kwargs):
    """A `TrainConfig` field: its default, its ``--help`` text, and how argparse reads it.

    Parameters
    ----------
    default : object
        The default value (a bool makes a switch: ``store_true``, or ``store_false`` for a
        ``--no-...`` flag).
    help : str
        Shown by ``--help``.
    flag : str, optional
        Default ``--`` + the field name with dashes.
    group : str, optional
        The ``--help`` section.
    type : callable, optional
        argparse type; default the type of ``default`` (str when it is None).
    **argparse_kwargs
        ``choices``, ``metavar``, ...
    """
    meta = {"help": help, "flag": flag, "group": group, "type": type, "kwargs": argparse_kwargs}
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every option of train.py (see ``python train.py --help``)."""

    data: list = option(None, "preprocessed training folder (from preprocess.py); repeat to train "
                              "on the union of several (default: data/features/train)",
                        action="append")
    val_data: list = option(None, "validate on this preprocessed folder (e.g. the official dev "
                                  "partition) instead of an 80/20 split of --data; repeatable",
                            action="append")
    val_fraction: float = option(datasets.VAL_FRACTION, "share of --data held out for "
                                 "validation (stratified), without --val-data")
    run: str = option(None, "run folder to write (default: runs/<date-time>); an unfinished "
                            "run there is resumed")
    overwrite: bool = option(False, "replace a finished run in --run")
    model: str = option(M.MODEL, "model family: 'efficientnetb0' (the design card: frozen "
                                     "ImageNet backbone), 'lcnn' (light CNN trained from "
                                     "scratch; works offline), 'whisper' (frozen Whisper "
                                     "encoder on waveform arrays, preprocess.py --features "
                                     "waveform; needs requirements-whisper.txt) or 'aasist' "
                                     "(AASIST on 64600-sample waveform arrays, preprocess.py "
                                     "--features waveform --clip-samples 64600; --init starts "
                                     "it from the official weights)",
                        choices=tuple(M.FAMILIES))
    weights: str = option(None, "EfficientNetB0 weights: 'imagenet' (downloaded by Keras), "
                                "'none' (random init), or the path of a local no-top weights "
                                "file" + family_default("weights"))
    preset: str = option(None, "Whisper encoder of --model whisper: a KerasHub preset name "
                               "(downloaded on first use, e.g. whisper_tiny_en), the path of a "
                               "local preset folder, or random:tiny / random:mini (untrained, "
                               "for tests and timing); configuration of --model aasist: AASIST "
                               "or AASIST-L" + family_default("preset"),
                         metavar="NAME|PATH")
    init: str = option(None, "start --model aasist from these weights instead of random ones: "
                             "a run folder (e.g. made by scripts/import_aasist.py), an official "
                             "checkpoint (.pth) or its name AASIST, AASIST-L or "
                             "AASIST-ASVspoof5", metavar="RUN|CHECKPOINT")
    freeze_encoder: bool = option(False, "AASIST only: freeze the sinc front end and the "
                                         "residual encoder (with --init: the imported "
                                         "ones); train only the graph attention back end, on "
                                         "encoder features computed once and cached")
    epochs: int = option(None, "training epochs" + family_default("epochs"), type=int)
    batch_size: int = option(None, "batch size" + family_default("batch_size"), type=int)
    learning_rate: float = option(None, "(initial) learning rate" + family_default(
        "learning_rate"), flag="--lr", type=float)
    lr_schedule: str = option(None, "learning-rate schedule: 'constant' or 'cosine' (decay to 0 "
                                    "over the training steps)" + family_default("lr_schedule"),
                              choices=M.LR_SCHEDULES)
    weight_decay: float = option(None, "decoupled weight decay (AdamW; 0 = Adam)"
                                 + family_default("weight_decay"), type=float)
    dense_units: int = option(None, "units of the hidden Dense layer" + family_default(
        "dense_units"), type=int)
    dropout: float = option(None, "dropout rate before the dense layers" + family_default(
        "dropout"), type=float)
    seed: int = option(datasets.SEED, "seed for the split, shuffling and initialization "
                                         "(repeatable runs)")
    seeds: str = option(None, "train the same recipe once per seed (e.g. 1,2,3) into "
                              "<run>/seed<N>/ and report mean and spread of EER and F1 (the "
                              "split stays that of --seed)")
    test_data: str = option(None, "with --seeds: also evaluate every seed's run on this "
                                  "preprocessed folder at its calibrated threshold")

    class_weight: str = option("none", "loss weight per class: 'none', 'balanced' "
                                       "(n / (2 n_class)) or W_BONA,W_SPOOF, e.g. 0.9,0.1",
                               group=RECIPE)
    balanced_batches: bool = option(False, "draw every training batch half bonafide, half "
                                           "spoof (oversampling the minority class)",
                                    group=RECIPE)
    calibrate: str = option("eer", "after training, choose the decision threshold on the "
                                   "validation data and save it (threshold.json; evaluate.py "
                                   "and predict.py use it by default): 'eer' (EER point), 'f1' "
                                   "(best F1, spoof positive), 'far:RATE' (most spoofs caught "
                                   "with at most RATE of bonafide flagged) or 'none' (keep 0.5)",
                            group=RECIPE)
    monitor: str = option("loss", "validation metric that selects best.keras and drives early "
                                  "stopping (val_eer is computed every epoch and logged in "
                                  "history.csv)", group=RECIPE, choices=tuple(MONITORS))
    early_stopping: int = option(0, "stop a phase after PATIENCE epochs without improvement of "
                                    "--monitor (0 = off)", group=RECIPE, metavar="PATIENCE")
    bn_batches: int = option(32, "before each validation, set the trainable BatchNorm layers' "
                                 "statistics to their mean over N training batches (precise "
                                 "BN: the moving average lags behind a model trained from "
                                 "scratch; families without trainable BatchNorm skip it); 0 = "
                                 "off", group=RECIPE, metavar="N")

    fine_tune_blocks: int = option(0, "unfreeze the last N of EfficientNetB0's 16 MBConv blocks "
                                      "(and its top 1x1 conv; BatchNorm stays frozen), or of "
                                      "the Whisper encoder's transformer layers (and its final "
                                      "layer norm), after --epochs frozen epochs; 0 = off",
                                   group=FINE_TUNE, metavar="N")
    fine_tune_epochs: int = option(5, "epochs of the fine-tuning phase", group=FINE_TUNE)
    fine_tune_lr: float = option(1e-5, "Adam learning rate of the fine-tuning phase",
                                 group=FINE_TUNE)

    freq_mask: int = option(0, "SpecAugment: frequency masks of up to F mel bins",
                            group=AUGMENT, metavar="F")
    time_mask: int = option(0, "SpecAugment: time masks of up to T frames", group=AUGMENT,
                            metavar="T")
    masks: int = option(1, "SpecAugment masks of each kind", group=AUGMENT)
    random_crop: bool = option(False, "take the ~4 s window at a random position of longer "
                                      "utterances (evaluation always takes the start)",
                               group=AUGMENT)
    rawboost: int = option(0, "RawBoost algorithm applied to every training example: 1 LnL "
                              "convolutive, 2 ISD impulsive, 3 SSI coloured noise, 4 = 1+2+3, "
                              "5 = 1+2, 6 = 1+3, 7 = 2+3 (series), 8 = 1 and 2 in parallel; "
                              "0 = off (Tak et al., ICASSP 2022; docs/recipes.md)",
                           group=AUGMENT, metavar="ALGO")
    channel: str = option(None, "random channel, each step with probability --augment-p, "
                                "bonafide and spoof alike: codec (MP3, Opus, Vorbis, GSM, "
                                "G.721, mu-law, A-law), dropout (packet loss), reverb "
                                "(simulated room)", group=AUGMENT, metavar="STEPS")
    gain_db: float = option(0.0, "random gain in [-G, +G] dB, clipped to [-1, 1] (features are "
                                 "max-normalized: gain matters through clipping and noise "
                                 "level)", group=AUGMENT, metavar="G")
    noise_snr: str = option(None, "add white noise at an SNR drawn from LOW..HIGH dB, e.g. "
                                  "10,40", group=AUGMENT, metavar="LOW,HIGH")
    lowpass: str = option(None, "codec-like low-pass with a cutoff drawn from LOW..HIGH Hz, "
                                "e.g. 3400,7000", group=AUGMENT, metavar="LOW,HIGH")
    augment_p: float = option(augment.AUGMENT_OFF["p"], "probability that each waveform "
                              "perturbation (gain, noise, low-pass, each --channel step) is "
                              "applied to an example",
                              group=AUGMENT)

    feature_cache: bool = option(True, "run the frozen backbone in every epoch instead of "
                                       "computing its features once (same result, slower; for "
                                       "checking)", flag="--no-feature-cache", group=SCALE)
    cache_dir: str = option(None, "where backbone features are cached (default: <data "
                                  "folder>/backbone_cache)", group=SCALE)
    strategy: str = option("none", "tf.distribute strategy: 'mirrored' = all GPUs of this host "
                                   "(the batch size is global); 'multiworker' (hosts in "
                                   "TF_CONFIG) stops with an explanation: Keras 3's fit does "
                                   "not support it yet", group=SCALE, choices=STRATEGIES)
    cpu_devices: int = option(0, "split the CPU into N logical devices (to try --strategy "
                                 "mirrored without GPUs)", group=SCALE)
    quiet: bool = option(False, "no per-epoch progress output")

    def augmentation(self):
        """The checked augmentation settings (`augment.augmentation`), None when off."""
        return augment.augmentation(
            self.freq_mask, self.time_mask, self.masks, self.random_crop, self.gain_db,
            self.noise_snr, self.lowpass, self.augment_p, rawboost=self.rawboost,
            channel=self.channel)

    def class_weight_spec(self):
        """``"none"``, ``"balanced"`` or ``(w_bona, w_spoof)``
        (`datasets.parse_class_weight`)."""
        if isinstance(self.class_weight, (tuple, list)):
            return tuple(self.class_weight)
        return datasets.parse_class_weight(self.class_weight)


def check(cfg):
    """Validate ``cfg``; return it with ``calibrate`` normalized. ValueError names the flag."""
    cfg = resolve(cfg)
    for f in dataclasses.fields(cfg):  # nan and inf pass every comparison below
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            raise ValueError(f"{flag} must be a finite number, got {v}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be positive")
    if cfg.early_stopping < 0 or cfg.fine_tune_blocks < 0 or cfg.bn_batches < 0:
        raise ValueError("--early-stopping, --fine-tune-blocks and --bn-batches must be >= 0")
    if cfg.model not in M.FAMILIES:
        raise ValueError(f"unknown model {cfg.model!r}; expected one of "
                         f"{', '.join(M.FAMILIES)}")
    if cfg.lr_schedule not in M.LR_SCHEDULES or cfg.weight_decay < 0 \
            or not cfg.learning_rate >= 0:
        raise ValueError("--lr-schedule must be constant or cosine, --lr and --weight-decay "
                         ">= 0")
    if cfg.monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, got {cfg.monitor!r}")
    if cfg.fine_tune_blocks and (cfg.fine_tune_epochs < 1 or not cfg.fine_tune_lr > 0):
        raise ValueError("fine-tuning needs --fine-tune-epochs >= 1 and --fine-tune-lr > 0")
    frozen = [name for name, f in M.FAMILIES.items() if f["frozen_backbone"]]
    if cfg.fine_tune_blocks and cfg.model not in frozen:
        raise ValueError(f"--fine-tune-blocks applies to {' and '.join(frozen)}; --model "
                         f"{cfg.model} trains every layer from the start")
    owners = M.FAMILY_OPTIONS["preset"][1]
    if cfg.preset is not None and cfg.model not in owners:
        raise ValueError(f"--preset applies to --model {' and '.join(owners)}, not to "
                         f"{cfg.model}")
    if cfg.init is not None and cfg.model != "aasist":
        raise ValueError(f"--init applies to --model aasist, not to {cfg.model}")
    if cfg.freeze_encoder and cfg.model != "aasist":
        raise ValueError(f"--freeze-encoder applies to --model aasist, not to {cfg.model} "
                         "(--fine-tune-blocks chooses what a frozen backbone trains)")
    if cfg.model == "whisper" and str(cfg.weights).lower() not in ("none",):
        raise ValueError("--weights applies to efficientnetb0; choose the Whisper encoder "
                         "with --preset")
    if M.FAMILIES[cfg.model]["features"] == "waveform" and (cfg.freq_mask or cfg.time_mask):
        raise ValueError(f"--freq-mask and --time-mask (SpecAugment) act on mel arrays; "
                         f"--model {cfg.model} reads waveforms (the waveform perturbations "
                         "--random-crop, --rawboost, --channel, --gain-db, --noise-snr and "
                         "--lowpass apply)")
    if cfg.fine_tune_blocks and cfg.strategy != "none":
        raise ValueError("--fine-tune-blocks is not supported with --strategy yet")
    if cfg.test_data and not cfg.seeds:
        raise ValueError("--test-data goes with --seeds (evaluate a single run with "
                         "evaluate.py --data)")
    cfg.augmentation()  # raises for bad ranges
    cfg.class_weight_spec()
    return dataclasses.replace(cfg, calibrate=metrics.parse_calibration(cfg.calibrate))


def resolve(cfg):
    """``cfg`` with every option left at None filled in: the family's defaults
    (`M.FAMILIES`), the default data folder; one folder given as a string becomes a list."""
    fill = {k: v for k, v in M.FAMILIES[cfg.model]["defaults"].items()
            if getattr(cfg, k) is None}
    fill["data"] = datasets.as_folders(cfg.data) or ["data/features/train"]
    fill["val_data"] = datasets.as_folders(cfg.val_data)
    return dataclasses.replace(cfg, **fill)


def make_config(base=None, **changes):
    """A checked `TrainConfig`: ``base`` (default: all defaults) with ``changes``."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}")
    changes = {k: str(v) if isinstance(v, PurePath) else v for k, v in changes.items()}
    if changes.get("model") and base is not None and changes["model"] != base.model:
        raise ValueError("pass model= together with the other options: this configuration "
                         f"was made (and its defaults filled in) for {base.model}")
    return check(dataclasses.replace(base or TrainConfig(), **changes))


# ----------------------------------------------------------------------------- command line


def add_options(ap, cls=TrainConfig):
    """Add one argparse option per field of ``cls`` to ``ap``, in field order and groups."""
    groups = {}
    for f in dataclasses.fields(cls):
        m = f.metadata
        target = ap if m["group"] is None else groups.setdefault(
            m["group"], ap.add_argument_group(m["group"]))
        flag = m["flag"] or "--" + f.name.replace("_", "-")
        kwargs = dict(dest=f.name, help=m["help"], **m["kwargs"])
        if isinstance(f.default, bool):
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs.update(default=f.default,
                          type=m["type"] or (type(f.default) if f.default is not None else str))
        target.add_argument(flag, **kwargs)
    return ap


def from_args(args, cls=TrainConfig):
    """The ``cls`` instance of parsed arguments (unchecked)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def build_parser(description):
    """The command line of train.py, derived from `TrainConfig`."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=cli.HelpFormatter)
    return add_options(ap)


def parse_seeds(spec):
    """``"1,2,3"`` -> [1, 2, 3] (distinct integers)."""
    try:
        seeds = [int(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {spec!r}: expected distinct integers, e.g. 1,2,3")
    return seeds
