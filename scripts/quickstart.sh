#!/usr/bin/env bash
# The whole pipeline on the synthetic demo corpus, offline:
#   make demo corpus -> preprocess -> train (80/20 of the train part) -> evaluate on the
#   validation 20% (one line: it chose the checkpoint and threshold) and on dev (the test).
# Usage: bash scripts/quickstart.sh [RECIPE] [EPOCHS]
#   RECIPE: lcnn (default): the LCNN family trained from scratch on the demo's train part (works
#             offline, about a minute of training);
#           offline: scripts/train_offline.py, the recommended detector for real speech (the
#             frozen Whisper base from PyPI with a linear probe, plus Piper spoofs when
#             requirements-tts.txt is installed; needs requirements-whisper.txt), evaluated on
#             demo dev as waveform windows; not meant for the demo's synthetic "bonafide" speech
#             (README, "What the quickstart shows"); EPOCHS does not apply;
#           none: the design card with a randomly initialized backbone (no detector: what
#             ranking it has swings with the seed);
#           imagenet: the design card with ImageNet weights (needs network once);
#           or the path of a local efficientnetb0_notop.h5 for the design card.
#   EPOCHS: training epochs (default: the recipe's own).
# DEMO_CORPUS_ARGS (environment, optional): more flags for scripts/make_demo_corpus.py, e.g.
#   "--train 24 --dev 12" for a smaller corpus (scripts/walkthrough.py --fast uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE="${1:-lcnn}"
EPOCHS=()
if [ -n "${2:-}" ]; then EPOCHS=(--epochs "$2"); fi
# shellcheck disable=SC2086  # DEMO_CORPUS_ARGS holds several flags
python scripts/make_demo_corpus.py --out data/demo --eval 0 --no-next-step ${DEMO_CORPUS_ARGS:-}
python preprocess.py --dataset-root data/demo/LA --split dev --out data/features/demo_dev
if [ "$RECIPE" = offline ]; then
    python scripts/train_offline.py --dataset-root data/demo/LA --split train --run runs/demo \
        --overwrite
    # its threshold was chosen on 20% of the training recordings (threshold.json); the test:
    python preprocess.py --dataset-root data/demo/LA --split dev --features waveform \
        --clip-samples 64524 --out data/features/demo_dev_wave
    python evaluate.py --run runs/demo --data data/features/demo_dev_wave
    exit 0
else
    python preprocess.py --dataset-root data/demo/LA --split train --out data/features/demo_train
    if [ "$RECIPE" = lcnn ]; then
        MODEL=(--model lcnn)
    else
        MODEL=(--weights "$RECIPE")
    fi
    python train.py --data data/features/demo_train --run runs/demo --overwrite \
        "${MODEL[@]}" "${EPOCHS[@]}"
fi
# the validation 20% of train chose best.keras and the threshold: its numbers are optimistic
python evaluate.py --run runs/demo > runs/demo/validation_summary.txt
echo "validation part (chose the checkpoint and threshold): $(grep -m1 'pooled EER' runs/demo/validation_summary.txt)"
# the test: demo dev, unseen speakers, which chose nothing
python evaluate.py --run runs/demo --data data/features/demo_dev
