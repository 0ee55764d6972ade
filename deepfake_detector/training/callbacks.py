"""The Keras callbacks of train.py: the best checkpoint and the per-epoch validation EER."""

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..evaluation.metrics import compute_eer
from ..models import load_tensorflow, save_model_atomic
from ..models.common import batchnorm_statistics, recalibrate_batchnorm


def make_checkpoint_callback(path, meta, model, monitor="val_loss", mode="min", best=None,
                             store=None):
    """Keep the model with the best ``monitor`` and write it to ``path`` when training ends.

    After each improving epoch the trainable weights, with the statistics of the trainable
    BatchNorm layers (without them, best.keras paired the best epoch's weights with the last
    epoch's statistics), are written (atomically, about 650 kB for the head) to ``store``
    (default ``<path>.trainable.npz``) instead of the whole 19 MB model, which made short
    epochs on cached features slow. A resumed run starts from that file. At
    the end of training, ``path`` gets the full model (``model``, the end-to-end model even when
    its head is trained on cached features) with the best weights and ``meta`` inside; when no
    epoch improved on ``best`` (a value carried over from an earlier phase), ``path`` is left
    as it is.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs, e.g. ``val_loss``, ``val_eer``, ``val_auc``.
    mode : {"min", "max"}
    best : float, optional
        The value to beat (default: none yet).
    """
    _, keras = load_tensorflow()

    store = Path(store or f"{path}.trainable.npz")
    sign = 1.0 if mode == "min" else -1.0
    # the trained weights and the BatchNorm statistics that go with them (not trainable)
    kept = [*model.trainable_weights, *batchnorm_statistics(model)]

    class BestCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            # kept as sign * value, so that lower is better in either mode
            self.best = np.inf if best is None else sign * float(best)
            self.weights, self.info = None, {}
            if store.exists():  # a resumed run
                with np.load(store, allow_pickle=False) as z:
                    self.best = float(z["best"])
                    # a store written before the statistics were kept: the current ones
                    self.weights = [z[f"w{i}"] if f"w{i}" in z.files else np.array(v)
                                    for i, v in enumerate(kept)]
                    self.info = {"epoch": int(z["epoch"]), monitor: sign * self.best}

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is not None and sign * value < self.best:
                self.best = sign * float(value)
                self.weights = [np.array(w) for w in kept]
                self.info = {"epoch": epoch + 1, monitor: float(value)}
                arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
                with atomic_output(store, suffix=".npz") as tmp:
                    np.savez(tmp, best=self.best, epoch=epoch + 1, **arrays)

        @property
        def best_value(self):
            return sign * self.best

        def on_train_end(self, logs=None):
            if self.weights is None:
                return
            current = [np.array(w) for w in kept]
            for var, w in zip(kept, self.weights):
                var.assign(w)
            save_model_atomic(model, path, {**meta, **self.info, "monitor": monitor})
            for var, w in zip(kept, current):
                var.assign(w)
            store.unlink(missing_ok=True)

    return BestCheckpoint()


def make_validation_callback(predict_model, val_ds, targets):
    """Adds ``val_eer`` (pooled EER of the validation part, bonafide = target, `metrics.
    compute_eer`) and ``val_auc`` (ROC AUC computed from the ranks of the scores, spoof =
    positive) to the epoch logs, for history.csv, best-checkpoint selection and early stopping.
    Keras' own AUC metric counts on 200 fixed thresholds and cannot tell apart scores packed
    near 0.5 (it stayed at 0.5000 while the EER moved from 19% to 62%), so it is not used.
    Must come before the callbacks that read these logs."""
    from sklearn.metrics import roc_auc_score

    _, keras = load_tensorflow()
    y = np.asarray(targets).astype(int)

    class ValidationEER(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            p = predict_model.predict(val_ds, verbose=0).reshape(-1).astype(np.float64)
            # -P(spoof) orders utterances as the bonafide score does (EER is rank-based)
            if logs is not None:
                both = (y == 0).any() and (y == 1).any()
                logs["val_eer"] = (compute_eer(-p[y == 0], -p[y == 1])[0] if both
                                   else float("nan"))
                logs["val_auc"] = float(roc_auc_score(y, p)) if both else float("nan")

    return ValidationEER()


def make_history_callback(path):
    """Writes ``history.csv`` (one row per epoch: ``epoch`` and every log, as Keras' CSVLogger
    writes it) atomically after every epoch, keeping the rows of earlier epochs of a resumed
    run: a crash can never leave a half-written row."""
    _, keras = load_tensorflow()
    import pandas as pd

    from ..atomic import write_csv_atomic

    path = Path(path)

    class HistoryCSV(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            old = pd.read_csv(path) if path.exists() else pd.DataFrame({"epoch": []})
            row = pd.DataFrame([{"epoch": epoch, **{k: float(v) for k, v in
                                                    sorted((logs or {}).items())}}])
            write_csv_atomic(path, pd.concat([old[old["epoch"] < epoch], row],
                                             ignore_index=True))

    return HistoryCSV()


RANDOM_STATE = "random_state.json"  # beside Keras' backup files


def make_random_state_callback(backup_dir):
    """Save the layers' random-number state (the ``seed_generator_state`` variables of Dropout
    and the other random layers) with each epoch's backup, and put it back when a run resumes.

    Keras' ``BackupAndRestore`` restores weights and optimizer, not these counters, so a resumed
    run drew epoch 0's dropout masks again (measured: different history and weights). Must come
    after ``BackupAndRestore`` in the callback list: its ``on_train_begin`` restores the
    weights, this one the random state of the same epoch. Written atomically, with the epoch it
    belongs to; a state of another epoch than the backup's (a crash between the two writes) is
    not applied.
    """
    import json

    _, keras = load_tensorflow()
    path = Path(backup_dir) / RANDOM_STATE

    class RandomState(keras.callbacks.Callback):
        def _states(self):
            return [v for v in self.model.variables if v.path.endswith("seed_generator_state")]

        def on_train_begin(self, logs=None):
            if not path.exists():
                return
            saved = json.loads(path.read_text())
            states = self._states()  # in the model's order (names may differ in a new build)
            if saved.get("epoch") != getattr(self.model, "_initial_epoch", None) \
                    or len(saved["states"]) != len(states):
                return
            for var, value in zip(states, saved["states"]):
                var.assign(np.asarray(value, dtype="int64"))

        def on_epoch_end(self, epoch, logs=None):
            from ..atomic import write_text_atomic

            if path.parent.is_dir():
                states = [np.asarray(v).tolist() for v in self._states()]
                write_text_atomic(path, json.dumps({"epoch": epoch + 1, "states": states}))

    return RandomState()


EARLY_STOPPING_STATE = "early_stopping.json"  # beside Keras' backup files


def make_early_stopping_callback(backup_dir, monitor, patience, mode):
    """Keras' ``EarlyStopping`` whose count of epochs without improvement survives a crash.

    Keras resets its counter and best value at every ``fit``, so a run resumed after a crash
    waited ``patience`` epochs again from the resumed epoch (and could train longer than the
    uninterrupted run). Its state (``wait``, ``best``, ``best_epoch``) is written atomically
    with each epoch's backup and put back when the run resumes at that same epoch.
    """
    import json

    from ..atomic import write_text_atomic

    _, keras = load_tensorflow()
    path = Path(backup_dir) / EARLY_STOPPING_STATE

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if not path.exists():
                return
            saved = json.loads(path.read_text())
            if saved.get("epoch") == getattr(self.model, "_initial_epoch", None):
                self.wait, self.best = int(saved["wait"]), saved["best"]
                self.best_epoch = int(saved["best_epoch"])

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if path.parent.is_dir():
                best = None if self.best is None else float(self.best)
                write_text_atomic(path, json.dumps({"epoch": epoch + 1, "wait": self.wait,
                                                    "best": best,
                                                    "best_epoch": self.best_epoch}))

    return ResumableEarlyStopping(monitor, patience=patience, mode=mode)


def make_batchnorm_callback(model, batches, n_batches):
    """Before every validation inside ``fit``: recompute the trainable BatchNorm statistics of
    ``model`` over the first ``n_batches`` of ``batches`` (`models.common.
    recalibrate_batchnorm`), so that validation, the checkpoints and the saved model use
    statistics that match the weights. ``batches``: a dataset of model inputs (a fixed
    selection of training utterances, without augmentation)."""
    _, keras = load_tensorflow()

    class PreciseBatchNorm(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            recalibrate_batchnorm(model, batches.take(n_batches))

    return PreciseBatchNorm()


# ----------------------------------------------------------------------------- resume


def epochs_done(backup_dir):
    """The epoch (counted from the run's start) after which Keras' BackupAndRestore last saved
    in ``backup_dir`` (its ``training_metadata.json``, which Keras restores ``initial_epoch``
    from; else a ``.bkp`` copy), 0 for a phase never started."""
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        path = Path(backup_dir) / name
        if path.exists():
            return int(json.loads(path.read_text()).get("epoch", 0))
    return 0


def resume_where_stopped(fit_model, epochs):
    """Before ``fit`` resumes a phase ``epochs`` epochs in: build the optimizer, so that Keras'
    BackupAndRestore loads its saved state (Adam's moments, the step count the learning-rate
    schedule follows) instead of skipping it with a warning, as it did (a resumed run restarted
    Adam and the cosine schedule). The layers' random state, the early-stopping count and the
    data order come back too (the callbacks above, `sampling.EpochClock`)."""
    if epochs > 0:
        fit_model.optimizer.build(fit_model.trainable_variables)
