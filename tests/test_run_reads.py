"""A run folder is read once (issue 36): one evaluate.py and one predict.py call open each of the
run's files (config.json, threshold.json, calibration.json, familiarity.npz) at most once and
read the model's metadata once, however many steps use them (`runs.Run`)."""

import builtins
import collections
import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import tone, write_wav
from deepfake_detector.models.common import META_NAME

RUN_FILES = ("config.json", "threshold.json", "calibration.json", "familiarity.npz")


@pytest.fixture
def reads(trained_run, tmp_path, monkeypatch):
    """A copy of the trained run, and a counter of what is read from it: file opens by name,
    and ``"metadata"`` for each read of the model's metadata from its archive."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval"))
    counts = collections.Counter()
    real_open, real_read = io.open, zipfile.ZipFile.read

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).parent == run:
            counts[Path(file).name] += 1
        return real_open(file, *args, **kwargs)

    def counting_read(self, name, *args, **kwargs):
        if name == META_NAME and Path(str(self.filename)).parent == run:
            counts["metadata"] += 1
        return real_read(self, name, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(zipfile.ZipFile, "read", counting_read)
    return run, counts


def test_counting_sees_every_way_of_reading(reads):
    run, counts = reads
    import json

    from deepfake_detector.models import read_model_meta

    json.loads((run / "config.json").read_text())
    with open(run / "threshold.json") as f:
        f.read()
    read_model_meta(run / "best.keras")
    assert counts["config.json"] == counts["threshold.json"] == counts["metadata"] == 1


def test_evaluate_reads_the_run_once(reads, tmp_path):
    import evaluate

    run, counts = reads
    m = evaluate.evaluate(run, out=tmp_path / "eval", plots=False)
    assert m["n"]["total"] > 0 and "calibrated" in m["threshold"]["source"]
    assert counts["metadata"] == 1, counts
    assert counts["config.json"] == 1 and counts["threshold.json"] == 1, counts  # all are used
    assert all(counts[name] <= 1 for name in RUN_FILES), counts


def test_predict_reads_the_run_once(reads, tmp_path, capsys):
    import predict

    run, counts = reads
    wav = tmp_path / "a.wav"
    write_wav(wav, tone(2.0))
    assert predict.main(["--run", str(run), "--csv", str(wav)]) == 0
    assert "a.wav" in capsys.readouterr().out
    assert counts["metadata"] == 1, counts
    assert counts["threshold.json"] == 1, counts
    assert all(counts[name] <= 1 for name in RUN_FILES), counts


def test_a_run_reads_nothing_until_asked(tmp_path):
    import json

    from deepfake_detector import runs

    folder = tmp_path / "scored_elsewhere"  # a threshold but no Keras model (lfcc_gmm.py's)
    folder.mkdir()
    (folder / "threshold.json").write_text(json.dumps({"final": {"threshold": 0.3}}))
    run = runs.Run(folder)
    assert run.name == str(folder) and run.which == "best"
    assert run.saved_threshold == {"threshold": 0.3}  # "best" falls back to the final model's
    assert run.calibration is None
    with pytest.raises(FileNotFoundError, match="model.keras not found"):
        run.meta
    assert runs.Run.of(run) is run
    with pytest.raises(ValueError, match="open for its 'best' model, not 'final'"):
        runs.Run.of(run, "final")
    (folder / "best.keras").write_bytes(b"not a zip")
    with pytest.raises(runs.ModelFileError, match="best.keras is not a readable model file"):
        runs.Run(folder).meta
