"""Every script's --help describes every flag: walked from each parser's own actions, so a flag
added without a description fails here."""

import argparse

import pytest

import compare_recipes
import data_loader
import evaluate
import import_aasist
import lfcc_gmm
import make_demo_corpus
import degrade_audio
import make_tts_spoofs
import make_vocoded_spoofs
import predict
import preprocess
import serve
import train
import train_offline
import leave_sources_out
import fit_familiarity
import long_audio
import walkthrough

SCRIPTS = [preprocess, data_loader, train, compare_recipes, evaluate, make_demo_corpus, predict,
           serve, make_vocoded_spoofs, lfcc_gmm, train_offline, import_aasist, make_tts_spoofs,
           degrade_audio, leave_sources_out, fit_familiarity, long_audio, walkthrough]


def documented_actions(parser):
    """Every option and positional of ``parser`` except --help."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_help_lists_every_flag_with_a_description(module, capsys):
    parser = module.build_parser()
    actions = documented_actions(parser)
    assert len(actions) >= 2
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for action in actions:
        name = action.option_strings[0] if action.option_strings else (action.metavar
                                                                         or action.dest)
        assert action.help and len(action.help) > 8 and not action.help.startswith("-"), \
            f"{module.__name__} {name} has no description"
        assert name in text, f"{module.__name__} --help does not show {name}"


def test_every_training_option_is_a_flag():
    """The parser is derived from TrainConfig: one flag per field, nothing else."""
    import dataclasses

    from deepfake_detector.training import config

    dests = {a.dest for a in documented_actions(train.build_parser())}
    assert dests == {f.name for f in dataclasses.fields(config.TrainConfig)}


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_help_states_each_default_once(module):
    parser = module.build_parser()
    formatter = parser._get_formatter()
    for action in documented_actions(parser):
        text = formatter._get_help_string(action) % vars(action) if action.help else ""
        assert text.count("default") <= 1 and "(default: None)" not in text, (action.dest, text)


NOISE = ("cuInit", "cuda", "absl", "oneDNN")


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_help_prints_no_tensorflow_noise(script):
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and not any(w in proc.stderr for w in NOISE), proc.stderr


def test_loading_tensorflow_prints_nothing_on_a_cpu():
    """The one place TensorFlow is imported mutes its start-up chatter, and only that."""
    import subprocess
    import sys

    from conftest import REPO

    code = ("from deepfake_detector import models as model; import sys; tf, keras = model.load_tensorflow(); tf.constant(1) + 1; "
            "print('a real warning', file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.strip() == "a real warning", proc.stderr


def test_evaluate_refuses_a_missing_folder_before_loading_anything():
    import subprocess
    import sys
    import time

    from conftest import REPO

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "evaluate.py", "--data", "/no/such/folder"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 2 and proc.returncode == 2
    assert "--data /no/such/folder: no such preprocessed folder" in proc.stderr


# ----------------------------------------------------------------------------- hostile round 2

@pytest.mark.parametrize("module, argv, flag", [
    (predict, ["--hop", "inf", "x.wav"], "--hop"),
    (predict, ["--hop", "1e-9", "x.wav"], "--hop"),
    (predict, ["--max-seconds", "inf", "x.wav"], "--max-seconds"),
    (predict, ["--max-seconds", "nan", "x.wav"], "--max-seconds"),
    (predict, ["--batch-size", "0", "x.wav"], "--batch-size"),
    (serve, ["--max-upload-mb", "inf"], "--max-upload-mb"),
    (serve, ["--max-upload-mb", "-1"], "--max-upload-mb"),
    (serve, ["--port", "99999"], "--port"),
    (serve, ["--max-seconds", "nan"], "--max-seconds"),
    (serve, ["--wait-seconds", "nan"], "--wait-seconds"),
    (serve, ["--wait-seconds", "inf"], "--wait-seconds"),
    (evaluate, ["--batch-size", "0"], "--batch-size"),
    (evaluate, ["--batch-size", "-1"], "--batch-size"),
    (evaluate, ["--batch-size", "1_000"], "--batch-size"),
])
def test_numeric_flags_are_checked_at_parse_time(module, argv, flag, capsys):
    """Unchecked numbers used to give OverflowError tracebacks, a hang (a 1-sample hop), HTTP
    500 on every upload, or no response at all."""
    with pytest.raises(SystemExit) as e:
        module.build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value", [("--gain-db", "nan"), ("--lr", "inf"),
                                         ("--weight-decay", "nan"), ("--dropout", "nan")])
def test_train_refuses_non_finite_numbers_naming_the_flag(flag, value, tmp_path):
    with pytest.raises(SystemExit, match=f"{flag} must be a finite number"):
        train.main(["--data", str(tmp_path), "--run", str(tmp_path / "r"), "--model", "lcnn",
                    flag, value])
