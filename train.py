"""Train the design-card detector on preprocessed mel-spectrograms.

Model: EfficientNetB0 (ImageNet, include_top=False, frozen) -> GlobalAveragePooling2D ->
Dense(128, relu) -> Dropout(0.5) -> Dense(1, sigmoid) = P(spoof). Adam(1e-4), binary
cross-entropy, 10 epochs, batch 16. Label 1 = spoof. Every option and its default is a field of
`config.TrainConfig` (``python train.py --help``).

Each run writes ``runs/<name>/``:

- ``model.keras``   the model after the last epoch,
- ``best.keras``    the checkpoint with the best validation ``--monitor`` (default: lowest loss),
- ``threshold.json`` the decision threshold of each model, calibrated on the validation part,
- ``config.json``   every argument, the feature parameters, seed, data, versions,
- ``history.csv``   per-epoch loss and metrics,
- ``split.csv``     which utterances were used for training and which for validation.

Both model files also carry the feature parameters inside them (``deepfake_meta.json`` in the
.keras archive), so evaluation and prediction can never drift from training.

Example::

    python train.py --data data/features/train --run runs/baseline            # 80/20 split
    python train.py --data data/features/train --val-data data/features/dev   # official dev
    python train.py --weights none --epochs 2                                 # offline smoke run

Re-running an interrupted run with the same ``--run`` resumes from its last finished epoch.

Beyond the design card (off by default, except that the threshold is calibrated:
``--calibrate eer``; see docs/recipes.md)::

    python train.py --class-weight balanced --balanced-batches     # class imbalance
    python train.py --calibrate far:0.05 --monitor eer --early-stopping 3
    python train.py --fine-tune-blocks 2 --fine-tune-epochs 5      # second, unfrozen phase
    python train.py --freq-mask 16 --time-mask 16 --random-crop --noise-snr 10,40
    python train.py --seeds 1,2,3 --test-data data/features/dev    # mean and spread
"""

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake_detector import datasets, display, runs
from deepfake_detector import features as F
from deepfake_detector import models as M
from deepfake_detector.atomic import atomic_output, write_json_atomic, write_text_atomic
from deepfake_detector.evaluation import report
from deepfake_detector.sampling import EpochClock, epoch_order
from deepfake_detector.training import config as C
from deepfake_detector.training.callbacks import (
    epochs_done, make_batchnorm_callback, make_checkpoint_callback, make_early_stopping_callback,
    make_history_callback, make_random_state_callback, make_validation_callback,
    resume_where_stopped)
from deepfake_detector.training.distribute import (configure_cpu_devices, get_strategy,
                                                   trim_to_replicas)
from deepfake_detector.training.feature_cache import feature_batches, feature_dataset, part_features
from deepfake_detector.weights import checkpoints

BN_KEY = 2**32  # the epoch key of precise BN's selection of utterances (no epoch uses it)
DESCRIPTION = ("Train EfficientNetB0 (frozen) -> GAP -> Dense(128, relu) -> Dropout -> "
               "Dense(1, sigmoid) = P(spoof) on preprocessed mel arrays. Label 1 = spoof.")


@dataclass
class Prepared:
    """What a run trains on: the two parts, their feature parameters, the loss weights."""

    train_df: pd.DataFrame
    val_df: pd.DataFrame
    features: dict
    class_weights: dict


@dataclass
class Inputs:
    """What `Model.fit` runs on in the frozen phase: the full model on spectrograms, or its
    head on cached backbone features."""

    fit_model: object
    train_ds: object
    val_ds: object
    clock: object  # the epoch train_ds draws (`sampling.EpochClock`); its callback sets it
    use_cache: bool
    val_features: object = None
    bn_ds: object = None  # precise BN's batches of cached features


# ----------------------------------------------------------------------------- phases


def prepare_data(cfg, split_seed):
    """Load and split the data (nothing is written): `Prepared`."""
    train_df, val_df, features = datasets.load_splits(cfg.data, cfg.val_data,
                                                         cfg.val_fraction, split_seed)
    counts = train_df["label"].value_counts()
    if len(counts) < 2:
        raise ValueError(f"the training data hold only {counts.index[0]} utterances "
                         f"({counts.iloc[0]}); a detector needs bonafide and spoof")
    M.check_family_data(cfg.model, features, datasets.as_folders(cfg.data)[0])
    for df in (train_df, val_df):
        datasets.check_arrays(df, *F.array_spec(features))
    weights = datasets.class_weights(train_df["target"], cfg.class_weight_spec())
    return Prepared(train_df, val_df, features, weights)


def decay_steps(cfg, n_train):
    """Training steps of the cosine schedule (every epoch of the first phase), or None."""
    return cfg.epochs * -(-n_train // cfg.batch_size) if cfg.lr_schedule == "cosine" else None


def spectrogram_datasets(cfg, data, clock):
    """Training (shuffled, balanced, augmented as configured; each epoch drawn at the epoch
    ``clock`` gives) and validation datasets of mel arrays, in the model family's input form."""
    kind = M.FAMILIES[cfg.model]["input"]
    shape, dtype = F.array_spec(data.features)
    tr = datasets.make_dataset(data.train_df, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                  shape=shape, balanced=cfg.balanced_batches,
                                  augment=cfg.augmentation(), params=data.features, kind=kind,
                                  dtype=dtype, clock=clock)
    return tr, datasets.make_dataset(data.val_df, cfg.batch_size, shape=shape, kind=kind,
                                        dtype=dtype)


def training_inputs(cfg, model, data, dist, verbose):
    """The frozen phase's model and datasets: on cached backbone features when the backbone is
    frozen and nothing is augmented (`feature_cache.cached_features`), else on spectrograms."""
    replicas, clock = dist.num_replicas_in_sync, EpochClock()
    use_cache = (cfg.feature_cache and not cfg.augmentation() and (
        M.FAMILIES[cfg.model]["frozen_backbone"] or cfg.freeze_encoder)
        and M.encoder_frozen(model))
    if not use_cache:
        return Inputs(model, *spectrogram_datasets(cfg, data, clock), clock, use_cache=False)
    parts = [part_features(model, df, data.features, cfg.cache_dir, verbose > 0,
                           replicas > 1, M.FAMILIES[cfg.model]["input"])
             for df in (data.train_df, data.val_df)]
    with dist.scope():
        # several steps per call fail in Keras 3 under MirroredStrategy: one per call there
        head = M.head_model(model, cfg.learning_rate, 1 if replicas > 1 else 32,
                            cfg.weight_decay, decay_steps(cfg, len(data.train_df)))
    rows = [np.arange(len(p)) for p in parts]
    train_ds = feature_dataset(parts[0], rows[0], data.train_df["target"], cfg.batch_size,
                               shuffle=True, seed=cfg.seed, balanced=cfg.balanced_batches,
                               clock=clock)
    val_ds = feature_dataset(parts[1], rows[1], data.val_df["target"], cfg.batch_size)
    bn_ds = None  # precise BN of a head with BatchNorm (AASIST's), built only when needed
    if cfg.bn_batches and M.trainable_batchnorms(head):
        order = epoch_order(data.train_df["target"], cfg.batch_size, BN_KEY, cfg.seed)
        bn_ds = feature_batches(parts[0], order[:cfg.bn_batches * cfg.batch_size],
                                cfg.batch_size)
    return Inputs(head, train_ds, val_ds, clock, True, None if cfg.fine_tune_blocks else parts[1],
                  bn_ds)


def run_config(cfg, data, model, inputs, replicas, split_seed, argv):
    """The content of ``config.json``: every option as given (`config.TrainConfig`), what it
    resolved to, the data, the model and the environment."""
    w = data.class_weights
    resolve = lambda folders: [str(Path(f).resolve()) for f in folders]  # noqa: E731
    args = {**asdict(cfg),
            "data": resolve(cfg.data),
            "val_data": resolve(cfg.val_data) if cfg.val_data else None,
            "val_fraction": None if cfg.val_data else cfg.val_fraction,
            "split_seed": None if cfg.val_data else split_seed,
            "feature_cache": inputs.use_cache, "replicas": replicas,
            "class_weight": cfg.class_weight_spec() if isinstance(cfg.class_weight_spec(), str)
            else list(cfg.class_weight_spec()),
            "augment": cfg.augmentation(),
            "fine_tune_epochs": cfg.fine_tune_epochs if cfg.fine_tune_blocks else 0,
            "fine_tune_lr": cfg.fine_tune_lr if cfg.fine_tune_blocks else None}
    return {
        "args": args,
        "class_weights": {"bonafide": w[0], "spoof": w[1]} if w else None,
        "command": " ".join(argv) if argv is not None else None,
        "features": data.features,
        "labels": runs.LABELS,
        "input": M.input_spec(cfg.model, data.features),
        "counts": {part: d["label"].value_counts().to_dict()
                   for part, d in (("train", data.train_df), ("val", data.val_df))},
        "trained_on": runs.trained_on(data.train_df),
        "params": M.param_counts(model),
        "versions": runs.versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def batchnorm_batches(cfg, data, fit_model, cached=None):
    """The training inputs precise BN averages over (``--bn-batches``; `callbacks.
    make_batchnorm_callback`): a fixed, seeded selection of training utterances, without
    augmentation (``cached``: the same as cached features). None when it is off or the model
    has no trainable BatchNorm."""
    if not cfg.bn_batches or not M.trainable_batchnorms(fit_model):
        return None
    if cached is not None:
        return cached
    shape, dtype = F.array_spec(data.features)
    order = epoch_order(data.train_df["target"], cfg.batch_size, BN_KEY, cfg.seed)
    df = data.train_df.iloc[order[:cfg.bn_batches * cfg.batch_size]]
    return datasets.make_dataset(df, cfg.batch_size, shape=shape, with_labels=False,
                                 kind=M.FAMILIES[cfg.model]["input"], dtype=dtype)


def phase_callbacks(cfg, run_dir, backup_dir, checkpoint, fit_model, val_ds, data, clock,
                    extra=(), bn_ds=None):
    """The training data's epoch clock, backup (resume), precise BN, validation EER, CSV log,
    best checkpoint, early stopping, extras."""
    _, keras = M.load_tensorflow()

    key, mode = C.MONITORS[cfg.monitor]
    bn = batchnorm_batches(cfg, data, fit_model, bn_ds)
    cbs = [clock.callback(),  # on_epoch_begin: the epoch the training data draw
           keras.callbacks.BackupAndRestore(str(backup_dir)),
           make_random_state_callback(backup_dir),  # after the backup: see its docstring
           *([make_batchnorm_callback(fit_model, bn, cfg.bn_batches)] if bn else []),
           make_validation_callback(fit_model, val_ds, data.val_df["target"]),
           make_history_callback(run_dir / "history.csv"),
           checkpoint]
    if cfg.early_stopping:
        cbs.append(make_early_stopping_callback(backup_dir, key, cfg.early_stopping, mode))
    return [*cbs, *extra]


def fit_frozen(cfg, run_dir, model, inputs, data, meta, verbose, extra):
    """Phase 1, the design card's frozen backbone (on cached features when possible). A
    fine-tuning run records its end (``phase1.json``, ``phase1.weights.h5``) so that a resumed
    run does not repeat it. Returns (best monitored value, epochs run)."""
    phase1_done = run_dir / "phase1.json"
    if phase1_done.exists():
        model.load_weights(run_dir / "phase1.weights.h5")
        done = json.loads(phase1_done.read_text())
        return done["best"], done["epochs"]
    key, mode = C.MONITORS[cfg.monitor]
    checkpoint = make_checkpoint_callback(run_dir / "best.keras", meta, model, key, mode)
    resume_where_stopped(inputs.fit_model, epochs_done(run_dir / "backup"))
    inputs.fit_model.fit(
        inputs.train_ds, validation_data=inputs.val_ds, epochs=cfg.epochs,
        callbacks=phase_callbacks(cfg, run_dir, run_dir / "backup", checkpoint,
                                  inputs.fit_model, inputs.val_ds, data, inputs.clock, extra,
                                  inputs.bn_ds),
        class_weight=data.class_weights, verbose=verbose,
        shuffle=False)  # train_ds draws every epoch's order itself (its clock)
    best, epochs_run = checkpoint.best_value, len(pd.read_csv(run_dir / "history.csv"))
    if cfg.fine_tune_blocks:
        with atomic_output(run_dir / "phase1.weights.h5", suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        write_text_atomic(phase1_done, json.dumps({"best": best, "epochs": epochs_run}) + "\n")
    return best, epochs_run


def fine_tune(cfg, run_dir, model, data, meta, run_cfg, best, epochs_run, verbose, extra):
    """Phase 2 (``--fine-tune-blocks N``): unfreeze the top blocks, lower learning rate,
    spectrogram input; ``best.keras`` stays the best of both phases."""
    blocks = M.unfreeze_top_blocks(model, cfg.fine_tune_blocks)
    M.compile_model(model, cfg.fine_tune_lr)
    run_cfg["fine_tune"] = {"blocks": blocks, "phase1_epochs": epochs_run,
                            "trainable": M.param_counts(model)["trainable"]}
    write_json_atomic(run_dir / "config.json", run_cfg)
    clock = EpochClock(epochs_run)
    train_ds, val_ds = spectrogram_datasets(cfg, data, clock)
    resume_where_stopped(model, epochs_done(run_dir / "backup_ft") - epochs_run)
    key, mode = C.MONITORS[cfg.monitor]
    checkpoint = make_checkpoint_callback(run_dir / "best.keras", meta, model, key, mode,
                                          best=best, store=run_dir / "best.keras.finetune.npz")
    model.fit(train_ds, validation_data=val_ds, initial_epoch=epochs_run,
              epochs=epochs_run + cfg.fine_tune_epochs,
              callbacks=phase_callbacks(cfg, run_dir, run_dir / "backup_ft", checkpoint, model,
                                        val_ds, data, clock, extra),
              class_weight=data.class_weights, verbose=verbose, shuffle=False)


def finalize(cfg, run_dir, model, meta, data, inputs):
    """Save ``model.keras``, remove the phase markers, calibrate the decision threshold."""
    history = pd.read_csv(run_dir / "history.csv")
    M.save_model_atomic(model, run_dir / "model.keras", {**meta, "epoch": len(history)})
    for leftover in ("phase1.json", "phase1.weights.h5"):
        (run_dir / leftover).unlink(missing_ok=True)
    note = "--calibrate none"
    if cfg.calibrate != "none":
        try:
            report.calibrate_run(run_dir, cfg.calibrate, val_features=inputs.val_features,
                                 val_targets=data.val_df["target"], model=model)
            return history
        except ValueError as e:  # e.g. a validation part with one class: the run is still good
            note = f"no threshold calibrated ({e})"
            print(f"warning: {note}; evaluate.py and predict.py will use 0.5", file=sys.stderr)
    # written last in every case: a run folder is finished when it holds threshold.json
    write_json_atomic(run_dir / "threshold.json", {"best": None, "final": None, "note": note})
    return history


def train(data, run_dir, config=None, *, verbose=None, callbacks=(), argv=None,
          split_seed=None, **options):
    """Train one run and write its folder (see module docstring).

    Parameters
    ----------
    data : str or Path
        Preprocessed training folder.
    run_dir : str or Path
    config : config.TrainConfig, optional
        Every option (default: the defaults); ``**options`` override single fields, e.g.
        ``train(data, run, weights="none", epochs=2)``.
    verbose : int, optional
        Keras verbosity; default 2, or 0 with ``quiet``.
    callbacks : sequence
        Extra Keras callbacks, run after the project's own (backup, validation EER, CSV log,
        best checkpoint).
    argv : list of str, optional
        The command line, recorded in config.json.
    split_seed : int, optional
        Seed of the 80/20 split, default ``seed`` (``--seeds`` keeps one split for all seeds).

    Returns
    -------
    run_dir : Path
    history : pandas.DataFrame
        One row per epoch (as in ``history.csv``).
    """
    tf, keras = M.load_tensorflow()

    cfg = C.make_config(config, data=data, run=run_dir, **options)
    run_dir, verbose = Path(run_dir), (0 if cfg.quiet else 2) if verbose is None else verbose
    split_seed = cfg.seed if split_seed is None else split_seed
    finished = runs.is_finished(run_dir)
    if finished and not cfg.overwrite:
        raise FileExistsError(f"{run_dir} already holds a finished run; choose another --run "
                              "or pass --overwrite")
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    # everything that can fail on bad input (data, weights) happens before the run folder is
    # touched, so a failed start never leaves a half-made run or deletes a finished one
    prepared = prepare_data(cfg, split_seed)
    dist = get_strategy(cfg.strategy)
    replicas = dist.num_replicas_in_sync
    if replicas > 1:
        if cfg.batch_size % replicas:
            raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the "
                             f"{replicas} replicas")
        prepared.train_df = trim_to_replicas(prepared.train_df, replicas)
        prepared.val_df = trim_to_replicas(prepared.val_df, replicas)
    with dist.scope():
        model = M.build(cfg.model, prepared.features, cfg.weights, cfg.dense_units, cfg.dropout,
                        cfg.learning_rate, cfg.weight_decay,
                        decay_steps(cfg, len(prepared.train_df)), cfg.preset,
                        cfg.freeze_encoder)
        init = (checkpoints.init_weights(model, cfg.init, cfg.preset) if cfg.init
                else M.weights_info(cfg.model, cfg.preset))
    inputs = training_inputs(cfg, model, prepared, dist, verbose)
    run_cfg = {**run_config(cfg, prepared, model, inputs, replicas, split_seed, argv),
               **({"weights": init} if init else {})}
    meta = {**{k: run_cfg[k] for k in ("features", "labels", "input", "trained_on")},
            "model": cfg.model, "run": run_dir.name,
            **({"preset": cfg.preset} if cfg.preset else {})}
    split = pd.concat([prepared.train_df.assign(part="train"),
                       prepared.val_df.assign(part="val")])
    runs.start_run(run_dir, finished or cfg.overwrite, split, run_cfg)
    best, epochs_run = fit_frozen(cfg, run_dir, model, inputs, prepared, meta, verbose,
                                  callbacks)
    if cfg.fine_tune_blocks:
        fine_tune(cfg, run_dir, model, prepared, meta, run_cfg, best, epochs_run, verbose,
                  callbacks)
    return run_dir, finalize(cfg, run_dir, model, meta, prepared, inputs)


# ----------------------------------------------------------------------------- several seeds


def train_seeds(cfg, run_dir, argv):
    """``--seeds``: the recipe once per seed into ``<run>/seed<N>/`` (finished ones kept), then
    `report.seed_summary` written to ``seeds.csv`` and ``seeds_summary.csv``."""
    run_list = []
    for seed in C.parse_seeds(cfg.seeds):
        run = run_dir / f"seed{seed}"
        if runs.is_finished(run) and not cfg.overwrite:
            print(f"{run}: finished earlier, kept", file=sys.stderr)
        else:  # the seed changes initialization and batch order; the split stays --seed's
            train(cfg.data, run, cfg, argv=argv, seed=seed, split_seed=cfg.seed)
        run_list.append(run)
    per_run, summary = report.seed_summary(run_list, cfg.test_data)
    per_run.to_csv(run_dir / "seeds.csv", index=False)
    summary.to_csv(run_dir / "seeds_summary.csv")
    print(f"\n{len(run_list)} seeds ({cfg.seeds}) of one recipe; EER bonafide = target, F1 "
          "positive class = spoof; val_f1_cal is optimistic (threshold chosen on the same data)")
    print(per_run.drop(columns=["run"]).to_string(index=False, float_format="%.4f"))
    print(summary.to_string(float_format="%.4f"))
    print(f"written: {run_dir / 'seeds.csv'}, {run_dir / 'seeds_summary.csv'}")


# ----------------------------------------------------------------------------- command line


def report_run(run_dir, history):
    """A short summary of a finished run (best epoch, calibrated threshold)."""
    key, mode = C.MONITORS[runs.read_config(run_dir)["args"]["monitor"]]
    best = history.loc[history[key].idxmin() if mode == "min" else history[key].idxmax()]
    lines = [f"run: {run_dir} ({len(history)} epochs)",
             f"best {key} at epoch {int(best['epoch']) + 1} (best.keras): val_loss "
             f"{best['val_loss']:.4f}, val_accuracy {best['val_accuracy']:.4f}, val_auc "
             f"{best['val_auc']:.4f} (positive class = spoof), val_eer {best['val_eer']:.2%}"]
    cal = runs.read_threshold(run_dir, "best")
    if cal is not None:
        v = cal["validation"]
        lines.append(f"calibrated threshold ({cal['method']}, validation): P(spoof) >= "
                     f"{display.format_threshold(cal['threshold'])}; "
                     f"F1 {v['calibrated']['f1']:.3f} "
                     f"(recall {v['calibrated']['recall']:.3f}) vs F1 {v['at_0.5']['f1']:.3f} "
                     f"(recall {v['at_0.5']['recall']:.3f}) at 0.5")
    return "\n".join(lines)


def build_parser():
    """The command line of train.py (from `config.TrainConfig`)."""
    return C.build_parser(DESCRIPTION)


def main(argv=None):
    args = build_parser().parse_args(argv)
    command = sys.argv[:1] + list(argv if argv is not None else sys.argv[1:])
    run_dir = Path(args.run) if args.run else runs.default_run_dir()
    if args.cpu_devices > 1:
        configure_cpu_devices(args.cpu_devices)
    try:
        cfg = C.make_config(C.from_args(args), run=str(run_dir))
        if cfg.seeds:
            train_seeds(cfg, run_dir, command)
            return run_dir
        run_dir, history = train(cfg.data, run_dir, cfg, argv=command)
    except (M.WeightsUnavailable, checkpoints.CheckpointUnavailable, FileNotFoundError,
            FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # a full disk, an unwritable --run: the run is unfinished, rerun resumes
        raise SystemExit(f"error: cannot write the run {run_dir}: {e}; it is not finished "
                         "(no threshold.json): fix that and run the same command again") from None
    print("\n" + report_run(run_dir, history))
    print(f"next: python evaluate.py --run {run_dir}")
    return run_dir


if __name__ == "__main__":
    main()
