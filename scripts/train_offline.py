"""The recommended detector without any download, from raw labelled audio to a run folder, in one
command:

    python scripts/train_offline.py --protocol FILE --audio-dir DIR --run RUN_DIR [--format F]
    python scripts/train_offline.py --dataset-root data/LA --split train --run runs/offline

1. preprocess.py: the audio listed in the protocol (any format preprocess.py reads: ASVspoof
   2019/2021/5 protocols, or a ``file,label`` CSV) -> ``<work>/features/real``,
2. scripts/make_vocoded_spoofs.py: every bonafide utterance vocoded into spoofs (WORLD,
   Griffin-Lim, MLSA) -> ``<work>/vocoded``, preprocessed into ``<work>/features/vocoded``,
3. train.py with the recommended offline recipe (`config.OFFLINE_RECIPE`: the LCNN trained from
   scratch on both folders, with SpecAugment masks; the threshold calibrated on the 80/20 held-out
   part) -> ``RUN_DIR``.

``--work`` defaults to ``data/offline/<run folder name>``. Every step resumes: re-running the
command after an interruption keeps what is finished. Then, as for any run::

    python evaluate.py --run RUN_DIR --data data/features/eval
    python predict.py --run RUN_DIR recording.wav

Flags this script does not know are passed to train.py (e.g. ``--epochs 10``, ``--seed 3``).
"""

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import config as C  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402
import make_vocoded_spoofs  # noqa: E402
import preprocess  # noqa: E402
from deepfake_detector import protocols  # noqa: E402
import train  # noqa: E402


def steps(protocol, audio_dir, run, work, fmt=None, workers=None, seed=0, train_flags=(),
          vocoders=make_vocoded_spoofs.VOCODERS, progress=True):
    """Run the three steps; return the run folder (see the module docstring)."""
    work = Path(work)
    real, vocoded = work / "features" / "real", work / "features" / "vocoded"
    say = print if progress else (lambda *a, **k: None)
    say(f"[1/3] preprocess {protocol} -> {real}", flush=True)
    preprocess.preprocess(protocol, audio_dir, real, fmt=fmt, split="train", workers=workers,
                          progress=progress)
    say(f"[2/3] vocode the bonafide utterances -> {work / 'vocoded'}", flush=True)
    sources = make_vocoded_spoofs.bonafide_sources(manifest=[real])
    summary = make_vocoded_spoofs.run(sources, work / "vocoded", vocoders, seed, workers,
                                      progress)
    preprocess.preprocess(summary["labels"], work / "vocoded", vocoded, split="vocoded",
                          workers=workers, progress=progress)
    argv = ["--data", str(real), "--data", str(vocoded), "--run", str(run),
            *shlex.split(C.OFFLINE_RECIPE), *train_flags]
    say(f"[3/3] python train.py {shlex.join(argv)}", flush=True)
    return train.main(argv)


def build_parser():
    """The command line of train_offline.py (other flags go to train.py)."""
    ap = argparse.ArgumentParser(
        description="Raw labelled audio -> the recommended offline detector (LCNN + vocoded "
                    "spoofs + SpecAugment) in a run folder. Other flags go to train.py.",
        formatter_class=HelpFormatter)
    ap.add_argument("--protocol", help="protocol or file,label CSV of the training audio (any "
                                       "format preprocess.py reads)")
    ap.add_argument("--audio-dir", help="folder of the audio files listed in --protocol")
    ap.add_argument("--format", choices=protocols.FORMATS,
                    help="protocol format (default: detected from the first line)")
    ap.add_argument("--dataset-root", help="instead of --protocol: an ASVspoof 2019 LA/PA "
                                           "folder as unpacked (with --split)")
    ap.add_argument("--split", default="train", choices=("train", "dev", "eval"),
                    help="the 2019 partition to train on, with --dataset-root")
    ap.add_argument("--run", required=True, help="run folder to write")
    ap.add_argument("--work", help="folder of the features and vocoded audio (default: "
                                   "data/offline/<run folder name>)")
    ap.add_argument("--workers", type=int, help="processes for preprocessing and vocoding "
                                                "(default: all cores)")
    ap.add_argument("--vocoders", default=",".join(make_vocoded_spoofs.VOCODERS),
                    help="vocoders that make the spoofed copies")
    ap.add_argument("--vocode-seed", type=int, default=0, help="seed of the vocoded copies")
    return ap


def main(argv=None):
    ap = build_parser()
    args, train_flags = ap.parse_known_args(argv)
    if bool(args.protocol) == bool(args.dataset_root):
        ap.error("give --protocol (with --audio-dir) or --dataset-root")
    if args.protocol and not args.audio_dir:
        ap.error("--protocol needs --audio-dir")
    vocoders = tuple(v.strip() for v in args.vocoders.split(",") if v.strip())
    if not vocoders or set(vocoders) - set(make_vocoded_spoofs.VOCODERS):
        ap.error(f"--vocoders: choose from {', '.join(make_vocoded_spoofs.VOCODERS)}")
    try:
        if args.protocol:
            protocol, audio_dir = Path(args.protocol), Path(args.audio_dir)
        else:
            protocol, audio_dir = protocols.resolve_2019_layout(args.dataset_root, args.split)
        work = Path(args.work or Path("data") / "offline" / Path(args.run).name)
        return steps(protocol, audio_dir, args.run, work, args.format, args.workers,
                     args.vocode_seed, train_flags, vocoders)
    except (protocols.ProtocolError, FileNotFoundError, ValueError,
            preprocess.IncompleteOutput) as e:  # a partial folder is never trained on
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
