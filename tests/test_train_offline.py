"""scripts/train_offline.py: raw labelled audio -> vocoded spoofs (and, on request, synthesizer
spoofs and augmented views), the recommended recipe, in one command that resumes; --init
fine-tunes the imported AASIST's back end."""

import json

import pandas as pd
import pytest

import train_offline
from conftest import needs_mini, MINI_LA, SHARED
from deepfake_detector.training import config as C

AASIST_DIR = SHARED.parent / "models" / "aasist"


def test_the_recipes_are_the_measured_ones():
    assert train_offline.RECIPE == "probe" and train_offline.PIPER_SPOOFS > 0
    assert train_offline.PROBE_PRESET.endswith("whisper_base")
    assert C.OFFLINE_RECIPE.startswith("--model whisper")
    assert "--freeze-encoder" in C.OFFLINE_INIT_RECIPE
    flags = train_offline.recipe_flags("AASIST", [])
    assert flags[-4:] == ["--init", "AASIST", "--preset", "AASIST"]
    assert train_offline.recipe_flags(None, ["--preset", "p"])[-1] != "p"  # train.py gets it
    assert train_offline.VIEWS == train_offline.TTS_PER_ENGINE == 0  # measured: not better


def test_one_command_trains_the_robust_recipe_and_resumes(demo_corpus, tmp_path):
    pytest.importorskip("keras_hub", reason="the Whisper recipe needs requirements-whisper.txt")
    work, run = tmp_path / "work", tmp_path / "run"
    argv = ["--dataset-root", str(demo_corpus), "--run", str(run), "--work", str(work),
            "--recipe", "whisper-finetune", "--vocoders", "world", "--views", "1",
            "--tts-per-engine", "2", "--workers", "1", "--preset", "random:mini", "--epochs", "1", "--fine-tune-epochs", "1",
            "--batch-size", "8"]
    out = train_offline.main(argv)
    assert out == run
    config = json.loads((run / "config.json").read_text())
    parts = sorted(p.rsplit("/", 1)[-1] for p in config["args"]["data"])
    engines = [e for e in train_offline.make_tts_spoofs.TRAIN_ENGINES
               if not train_offline.make_tts_spoofs.engine_problem(e)]
    want = ["real", "vocoded"] + (["tts"] if engines else [])
    assert parts == sorted(want + [f"aug_{p}" for p in want])
    assert config["args"]["model"] == "whisper" and config["args"]["fine_tune_blocks"] == 2
    assert config["args"]["fine_tune_epochs"] == 1  # the flag given, passed to train.py
    real = pd.read_csv(work / "features" / "real" / "manifest.csv")
    aug = pd.read_csv(work / "features" / "aug_real" / "manifest.csv")
    assert len(aug) == len(real) == 24
    assert (aug.sort_values("utt_id")["label"].to_numpy()
            == real.sort_values("utt_id")["label"].to_numpy()).all()
    if engines:
        tts = pd.read_csv(work / "tts" / "labels.csv")
        assert len(tts) == 2 * len(engines) and set(tts["attack"]) == set(engines)
    # a second call keeps everything made (no file written again) and refuses to overwrite
    # the finished run
    made = sorted((work / "vocoded").rglob("*.flac")) + sorted((work / "augmented").rglob(
        "*.flac"))
    stamps = [p.stat().st_mtime_ns for p in made]
    with pytest.raises(SystemExit, match="already holds a finished run"):
        train_offline.main(argv)
    assert made and [p.stat().st_mtime_ns for p in made] == stamps


@needs_mini
@pytest.mark.skipif(not (AASIST_DIR / "AASIST-L.pth").is_file(),
                    reason="needs the official AASIST checkpoints in ../shared/models/aasist")
def test_init_fine_tunes_the_imported_aasist_back_end(tmp_path, monkeypatch):
    monkeypatch.setenv("AASIST_WEIGHTS", str(AASIST_DIR))
    rows = pd.read_csv(MINI_LA / "ASVspoof2019_LA_cm_protocols" /
                       "ASVspoof2019.LA.cm.train.trn.txt", sep=" ", header=None).iloc[:12]
    labels = pd.DataFrame({"file": rows[1] + ".flac", "label": rows[4]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    run = tmp_path / "run"
    out = train_offline.main([
        "--protocol", str(tmp_path / "labels.csv"),
        "--audio-dir", str(MINI_LA / "ASVspoof2019_LA_train" / "flac"), "--run", str(run),
        "--work", str(tmp_path / "work"), "--init", "AASIST-L", "--vocoders", "world",
        "--workers", "1", "--epochs", "1"])
    config = json.loads((out / "config.json").read_text())
    # the recommended recipe's data: the audio and its vocoded copies, nothing else
    assert [p.rsplit("/", 1)[-1] for p in config["args"]["data"]] == ["real", "vocoded"]
    assert not (tmp_path / "work" / "tts").exists()
    assert not (tmp_path / "work" / "augmented").exists()
    assert config["args"]["model"] == "aasist" and config["args"]["freeze_encoder"]
    assert config["args"]["preset"] == "AASIST-L" and config["args"]["init"] == "AASIST-L"
    assert config["weights"]["sha256"]  # the imported checkpoint's provenance
    assert (out / "threshold.json").exists()


def test_init_reads_the_aasist_configuration_of_its_source_before_any_work(tmp_path, capsys):
    """Issue 34 point 15: --init with a .pth of the AASIST configuration passed --preset
    AASIST-L and failed at step 5; the configuration now comes from the source (a name, a
    .pth with or without its .conf, a run folder), and train.py's flags are checked before
    step 1."""
    assert train_offline.init_preset("AASIST") == "AASIST"
    assert train_offline.init_preset("AASIST-ASVspoof5") == "AASIST"
    pth = tmp_path / "mine.pth"
    pth.write_bytes(b"not read for its configuration")
    assert train_offline.init_preset(pth) == "AASIST"  # no .conf: the AASIST configuration
    from deepfake_detector.models import aasist
    (tmp_path / "mine.conf").write_text(json.dumps({"model_config": aasist.CONFIGS["AASIST-L"]}))
    assert train_offline.init_preset(pth) == "AASIST-L"
    assert train_offline.recipe_flags(str(pth), [])[-2:] == ["--preset", "AASIST-L"]
    with pytest.raises(ValueError, match="not a run of the AASIST family"):
        train_offline.init_preset(tmp_path)
    with pytest.raises(ValueError, match="not a run folder, a .pth file or one of"):
        train_offline.init_preset("AASIST-XL")
    with pytest.raises(SystemExit):  # a typo in a train.py flag: refused before any work
        train_offline.main(["--protocol", str(tmp_path / "none.csv"), "--audio-dir",
                            str(tmp_path), "--run", str(tmp_path / "run"), "--work",
                            str(tmp_path / "work"), "--init", "AASIST", "--epoks", "3"])
    assert "unrecognized arguments: --epoks" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "work").exists()
