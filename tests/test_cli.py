"""Every script's --help describes every flag: walked from each parser's own actions, so a flag
added without a description fails here."""

import argparse

import pytest

import compare_recipes
import data_loader
import evaluate
import lfcc_gmm
import make_demo_corpus
import make_vocoded_spoofs
import predict
import preprocess
import serve
import train
import train_offline

SCRIPTS = [preprocess, data_loader, train, compare_recipes, evaluate, make_demo_corpus, predict,
           serve, make_vocoded_spoofs, lfcc_gmm, train_offline]


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

    import config

    dests = {a.dest for a in documented_actions(train.build_parser())}
    assert dests == {f.name for f in dataclasses.fields(config.TrainConfig)}
