"""Every script's --help describes every flag."""

import re

import pytest

import compare_recipes
import data_loader
import evaluate
import make_demo_corpus
import predict
import preprocess
import serve
import train

FLAGS = {
    preprocess: ["--dataset-root", "--split", "--protocol", "--audio-dir", "--format", "--out",
                 "--workers", "--fit", "--overwrite", "--strict", "--limit"],
    data_loader: ["--val-data", "--val-fraction", "--seed"],
    train: ["--data", "--val-data", "--val-fraction", "--run", "--overwrite", "--weights",
            "--epochs", "--batch-size", "--lr", "--dense-units", "--dropout", "--seed",
            "--seeds", "--test-data", "--class-weight", "--balanced-batches", "--calibrate",
            "--monitor", "--early-stopping", "--fine-tune-blocks", "--fine-tune-epochs",
            "--fine-tune-lr", "--freq-mask", "--time-mask", "--masks", "--random-crop",
            "--gain-db", "--noise-snr", "--lowpass", "--augment-p",
            "--no-feature-cache", "--cache-dir", "--strategy", "--cpu-devices", "--quiet"],
    compare_recipes: ["--data", "--val-data", "--test", "--recipes", "--seeds", "--out",
                      "--asv-scores", "--list", "--verbose"],
    evaluate: ["--run", "--data", "--model", "--scores", "--protocol", "--format", "--asv-scores",
               "--threshold", "--batch-size", "--name", "--out", "--no-plots"],
    make_demo_corpus: ["--out", "--train", "--dev", "--eval", "--seed", "--min-dur", "--max-dur",
                       "--spoof-fraction"],
    predict: ["--run", "--model", "--threshold", "--aggregate", "--hop", "--batch-size", "--json",
              "--csv"],
    serve: ["--run", "--model", "--threshold", "--host", "--port", "--max-upload-mb",
            "--max-seconds"],
}


@pytest.mark.parametrize("module", list(FLAGS), ids=lambda m: m.__name__)
def test_help_lists_every_flag_with_a_description(module, capsys):
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    for flag in FLAGS[module]:
        i = next(i for i, line in enumerate(lines) if line.strip().startswith(flag))
        # "  --flag METAVAR   description" or the description on the next, indented line
        same_line = re.match(rf"\s+{flag}(?: \S+)?\s{{2,}}(\S.*)", lines[i])
        described = same_line.group(1) if same_line else lines[i + 1].strip()
        assert len(described) > 8 and not described.startswith("-"), \
            f"{module.__name__} {flag} has no description"
