"""The library behind the six programs (preprocess.py, data_loader.py, train.py, evaluate.py,
predict.py, serve.py). Its folders name the stages; imports go down the layers below, never up
(tests/test_layout.py checks it).

**The core** (modules at this level that every stage uses)
    ``atomic`` (files written whole), ``cli`` (help text, safe printing), ``audio`` (decoding,
    with every limit checked before work), ``logmel`` and ``features`` (the one source of the
    feature parameters and the arrays), ``protocols`` (ASVspoof protocols and score files),
    ``aggregate`` (the window rule of long recordings), ``display`` (how a decision is shown
    to people).

**Stages that build on the core alone**
    ``models/`` one module per model family (EfficientNetB0, LCNN, Whisper, AASIST), saving and
    loading; ``augment/`` what perturbs training data (SpecAugment and waveform perturbations
    in ``augment`` itself, ``rawboost``, codec and channel in ``channel``); ``evaluation/`` the
    field's metrics (``metrics``), score calibration (``calibration``), the tables by attack and
    condition (``breakdown``) and the plots (``plots``); ``weights/`` the readers of published
    weights that run no code (``pth`` for PyTorch, ``ct2`` for CTranslate2, ``whisper_import``).

**Data and runs** (modules at this level)
    ``datasets`` (manifests and ``tf.data``), ``sampling`` (the order batches are drawn in),
    ``runs`` (a trained run folder, opened once as a ``runs.Run``), ``familiarity`` (how unlike
    its training recordings an input is), ``inference`` (scoring recordings with a run:
    predict.py and serve.py).

**On top, reading runs**
    ``training/`` what only training needs (``config``, ``callbacks``, ``distribute``,
    ``feature_cache``, and the linear ``probe`` recipe); ``evaluation/report`` (scoring a
    folder with a run and writing the report); ``weights/checkpoints`` (the official AASIST
    checkpoints, and ``--init`` from a run).

Modules that lived at this level before the stage folders (``deepfake_detector.metrics``,
``.report``, ``.probe``, ...) are still importable by their old names (`MOVED`); the names
a saved model's archive registers (``models/``) did not move.
"""

import importlib
import importlib.abc
import importlib.util
import sys

# old module name -> where it lives now (imported lazily, under both names: one module object)
MOVED = {"pth": "weights.pth", "ct2": "weights.ct2", "checkpoints": "weights.checkpoints",
         "whisper_import": "weights.whisper_import", "rawboost": "augment.rawboost",
         "channel": "augment.channel", "metrics": "evaluation.metrics",
         "calibration": "evaluation.calibration", "breakdown": "evaluation.breakdown",
         "report": "evaluation.report", "plots": "evaluation.plots",
         "config": "training.config", "callbacks": "training.callbacks",
         "distribute": "training.distribute", "feature_cache": "training.feature_cache",
         "probe": "training.probe"}


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``deepfake_detector.<old>`` as the module now at ``MOVED[old]``."""

    def find_spec(self, name, path=None, target=None):
        prefix, _, old = name.partition(f"{__name__}.")
        if prefix or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def __init__(self):
        self.specs = {}  # module -> its own spec, which the import system overwrites

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{MOVED[spec.name.rsplit('.', 1)[1]]}")
        self.specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.specs[module.__name__]  # nothing to run: it is imported


sys.meta_path.append(_OldNames())
