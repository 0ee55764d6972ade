"""README and docs/: every relative link resolves, and every ``python SCRIPT.py ...`` command
shown parses with that script's own parser (a renamed or removed flag fails here)."""

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "data" / "README.md"]
SCRIPTS = {"preprocess.py", "data_loader.py", "train.py", "evaluate.py", "predict.py",
           "serve.py", "scripts/compare_recipes.py", "scripts/make_demo_corpus.py",
           "scripts/make_vocoded_spoofs.py", "scripts/lfcc_gmm.py", "scripts/train_offline.py",
           "scripts/import_aasist.py", "scripts/degrade_audio.py", "benchmarks/run.py",
           "scripts/import_whisper.py", "scripts/fuse_scores.py", "scripts/make_tts_spoofs.py",
           "benchmarks/augment.py", "benchmarks/startup.py", "scripts/leave_sources_out.py",
           "scripts/fit_familiarity.py", "scripts/long_audio.py", "scripts/walkthrough.py",
           "benchmarks/memory.py", "benchmarks/fairness.py", "benchmarks/aasist_flops.py"}


def commands(text):
    """The ``python SCRIPT.py ARGS`` commands of a Markdown text, continuation lines joined,
    comments and shell redirections dropped, ``[optional]`` synopsis brackets opened."""
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        line = line.strip().strip("`")
        m = re.match(r"(?:\$ )?python (\S+\.py)(.*)", line)
        if m and m.group(1) in SCRIPTS:
            args = re.split(r"\s(?:#|>|&|\|)", " " + m.group(2))[0]
            yield m.group(1), shlex.split(args.replace("[", " ").replace("]", " "))  # synopses


def load_script(script):
    """The module of a script path relative to the repository (benchmarks/run.py is not on
    sys.path, and its name alone would be ambiguous)."""
    if "/" not in script or script.startswith("scripts/"):
        return importlib.import_module(Path(script).stem)
    spec = importlib.util.spec_from_file_location(script.replace("/", "_")[:-3], REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    for target in re.findall(r"\]\(([^)]+)\)", doc.read_text()):
        if not target.startswith(("http://", "https://", "#")):
            assert (doc.parent / target.split("#")[0]).exists(), f"{doc.name}: {target}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_commands_parse_with_the_scripts_own_parsers(doc):
    for script, args in commands(doc.read_text()):
        parser = load_script(script).build_parser()
        if script == "scripts/compare_recipes.py":  # passes unknown flags on to train.py
            _, rest = parser.parse_known_args(args)
            importlib.import_module("train").build_parser().parse_args(
                ["--data", "x", *rest])
        else:
            parser.parse_args(args)


def test_the_command_finder_sees_commands():
    found = list(commands("    python train.py --data d \\\n        --epochs 2   # note\n"
                          "    python evaluate.py --run r > out.txt\n    python other.py -x\n"))
    assert found == [("train.py", ["--data", "d", "--epochs", "2"]),
                     ("evaluate.py", ["--run", "r"])]
