"""scripts/walkthrough.py: README's commands, in order, in a fresh copy of the repository
(issue 34: README can no longer drift from what runs)."""

import os
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import walkthrough as W  # noqa: E402

SKIPPED = {"python -m venv .venv && . .venv/bin/activate", "pip install -r requirements.txt",
           "pip install -r requirements-whisper.txt", "pip install -r requirements-tts.txt",
           "bash scripts/quickstart.sh imagenet", "python -m pip install -r requirements-dev.txt",
           "python -m pytest -q -n 2"}


def test_the_finder_reads_readme_commands_and_the_plan_changes_only_what_it_says():
    text = ("Install:\n\n    pip install -r requirements.txt\n    python train.py --data d \\\n"
            "        --run r   # a note\n\n    file,label\n    a.wav,spoof\n\n"
            "    AASIST_WEIGHTS=/x python scripts/import_aasist.py AASIST-L --run r2\n")
    assert W.readme_commands(text) == [
        "pip install -r requirements.txt", "python train.py --data d --run r",
        "AASIST_WEIGHTS=/x python scripts/import_aasist.py AASIST-L --run r2"]
    train = "python train.py --data d --run r"
    assert W.final_command(train, W.rule_for(train), fast=False) == train + " --weights none"
    assert W.final_command(train, W.rule_for(train), fast=True) == \
        train + " --weights none --epochs 1"
    lcnn = "python train.py --model lcnn --data d"  # trains offline: no change but the epochs
    assert W.final_command(lcnn, W.rule_for(lcnn), fast=True) == lcnn + " --epochs 1"
    curl = "curl -F file=@a.mp3 http://127.0.0.1:8000/predict"
    assert W.final_command(curl, W.rule_for(curl), False, port=4321).endswith(
        "127.0.0.1:4321/predict")
    commands = W.readme_commands((REPO / "README.md").read_text())
    assert SKIPPED <= set(commands) and len(commands) >= 30
    assert {c for c in commands if "skip" in W.rule_for(c)} == SKIPPED


def test_a_failing_command_or_a_missing_result_stops_the_walk(tmp_path):
    with pytest.raises(RuntimeError, match="exited 3"):
        W.walk(["python -c 'import sys; print(\"boom\"); sys.exit(3)'"], tmp_path, fast=True,
               say=lambda line: None)
    with pytest.raises(RuntimeError, match="left neither the file nor the words 'written to'"):
        W.run_command("python -c 'print(1)'", {"expect": ["written to"]}, tmp_path)


@pytest.mark.slow
def test_every_readme_command_runs_in_a_fresh_copy(tmp_path):
    """The fast form, as CI runs it: every README command that needs no network ran, in
    order; the rest skipped with their reasons (what needs ../shared/models/aasist too, when
    it is absent)."""
    lines = W.main(["--fast", "--keep", str(tmp_path / "walk")])
    commands = W.readme_commands((REPO / "README.md").read_text())
    assert len(lines) == len(commands)
    skipped = {line.split("  ")[1] for line in lines if line.startswith("skipped")}
    needs_aasist = {c for c in commands if W.rule_for(c).get("needs")}
    assert skipped == SKIPPED | (set() if W.AASIST_DIR.is_dir() or os.environ.get("CI")
                                 else needs_aasist)
    walk = tmp_path / "walk" / "repo"
    assert (walk / "runs" / "offline" / "threshold.json").is_file()
    assert (walk / "runs" / "official" / "eval" / "eval" / "metrics.json").is_file()
