"""A channel-degraded copy of a corpus: the same utterances and labels through a telephone band,
additive noise and a low-bitrate MP3, to measure what a detector does off the studio channel;
or, with the random steps and ``--views K``, K augmented copies of a training corpus (RawBoost
and a random codec and channel), for families that train on cached features.

    python scripts/degrade_audio.py --dataset-root ../shared/data/asvspoof2019_la_mini/LA \\
        --split dev --out data/degraded/mini_dev
    python preprocess.py --protocol data/degraded/mini_dev/labels.csv \\
        --audio-dir data/degraded/mini_dev/flac --features waveform --clip-samples 64600 \\
        --out data/features/mini_dev_degraded_64600

Each utterance (decoded to mono 16 kHz) goes through the ``--chain`` steps in order, the same
for bonafide and spoof, so a detector cannot read the label off the channel:

- ``telephone``: resampled to 8 kHz and back (soxr; nothing above 4 kHz survives);
- ``noise``: white Gaussian noise at ``--snr`` dB below the utterance's mean power;
- ``mp3``: encoded as MP3 by libsndfile (LAME) at 8 kHz with ``--mp3-quality`` (0 = best, 1 =
  smallest; 0.9 gives about 16 kbit/s) and decoded again;
- ``rawboost``: RawBoost algorithm ``--rawboost`` (`deepfake_detector.augment.rawboost`, drawn
  anew for every copy);
- ``channel``: a random codec, packet loss and room (`deepfake_detector.augment.channel`), each with
  probability ``--channel-p``.

With ``--views K`` every utterance gets K copies, each drawn from its own seed; their labels,
attacks and speakers are the source's. Copies made with a random step (``rawboost``,
``channel``) or K > 1 are named ``<id>_v<k>`` (they train beside their sources); a copy of the
fixed test chain keeps its source's id. Example (the training views of the
robust recipe, docs/recipes.md)::

    python scripts/degrade_audio.py --protocol data/train_labels.csv --audio-dir AUDIO \
        --chain rawboost,channel --views 2 --out data/augmented/train

The noise is drawn from a generator seeded by ``--seed`` and the utterance id, so a copy is the
same on every run. Copies are written as 16-bit FLAC, atomically; existing ones are kept (run it
again after an interruption), and a file that cannot be read is listed in ``errors.csv`` without
stopping the others. ``labels.csv`` (``file,label,attack,speaker``, the csv format of
preprocess.py) lists the written copies with the labels of their sources. ``settings.json``
records what made the copies; a rerun into the same ``--out`` with other settings is refused
(its old copies would be listed as the new run's).
"""

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import features, protocols  # noqa: E402
from deepfake_detector.atomic import atomic_output, write_text_atomic  # noqa: E402
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402

# -----------------------------------------------------------------------------
CHAIN = ("telephone", "noise", "mp3")  # the degraded test copy
STEPS = CHAIN + ("rawboost", "channel")
RAWBOOST = 5  # LnL + ISD in series (what RawBoost's authors train LA models with)
CHANNEL_P = 0.5
SNR_DB = 20.0
MP3_QUALITY = 0.9  # libsndfile compression level: about 16 kbit/s at 8 kHz
TELEPHONE_RATE = 8000
# -----------------------------------------------------------------------------


def degrade(y, chain=CHAIN, snr_db=SNR_DB, mp3_quality=MP3_QUALITY, rng=None,
            sr=features.SAMPLE_RATE, rawboost=RAWBOOST, channel_p=CHANNEL_P):
    """One degraded copy of a mono waveform (module docstring).

    Parameters
    ----------
    y : np.ndarray, shape (n,), float32
    chain : sequence of {"telephone", "noise", "mp3", "rawboost", "channel"}
    rng : np.random.Generator, optional
        For the noise and the random steps.
    rawboost : int
        The RawBoost algorithm of the ``rawboost`` step (1-8).
    channel_p : float
        Probability of each step of the ``channel`` step.

    Returns
    -------
    y_degraded : np.ndarray, shape (n,), float32, in [-1, 1]
    """
    import io

    import librosa
    import soundfile as sf

    from deepfake_detector.augment import channel, rawboost as rb

    unknown = sorted(set(chain) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown degradation(s) {unknown}; choose from {', '.join(STEPS)}")
    n = y.size
    y = np.asarray(y, np.float64)
    rng = rng or np.random.default_rng(0)
    for step in chain:
        if step == "rawboost":
            y = rb.rawboost(y, rawboost, rng, sr).astype(np.float64)
        elif step == "channel":
            y = channel.channel(y, rng, sr, p=channel_p).astype(np.float64)
        elif step == "telephone":
            low = librosa.resample(y, orig_sr=sr, target_sr=TELEPHONE_RATE, res_type="soxr_hq")
            y = librosa.resample(low, orig_sr=TELEPHONE_RATE, target_sr=sr, res_type="soxr_hq")
        elif step == "noise":
            power = float(np.mean(y ** 2))
            y = y + rng.standard_normal(y.size) * np.sqrt(power / 10 ** (snr_db / 10))
        else:
            buf = io.BytesIO()
            low = librosa.resample(y, orig_sr=sr, target_sr=TELEPHONE_RATE, res_type="soxr_hq")
            sf.write(buf, np.clip(low, -1, 1), TELEPHONE_RATE, format="MP3",
                     subtype="MPEG_LAYER_III", compression_level=mp3_quality)
            buf.seek(0)
            dec, rate = sf.read(buf, dtype="float64")
            y = librosa.resample(dec, orig_sr=rate, target_sr=sr, res_type="soxr_hq")
        y = np.resize(y, n) if y.size != n else y  # codecs pad or trim a few samples
    return np.clip(y, -1, 1).astype(np.float32)


def degrade_corpus(protocol, audio_dir, out_dir, chain=CHAIN, snr_db=SNR_DB,
                   mp3_quality=MP3_QUALITY, seed=0, limit=None, views=1, rawboost=RAWBOOST,
                   channel_p=CHANNEL_P, fmt=None, progress=True):
    """Write degraded copies (``views`` per utterance) of every file a protocol lists (module
    docstring). Copy k of utterance u is drawn from the seed (``seed``, crc32(u), k), so a
    rerun, or a run with more views, writes the same copies.

    Returns
    -------
    summary : dict
        ``written``, ``kept``, ``failed`` counts and the output paths.
    """
    import soundfile as sf
    from tqdm import tqdm

    df = protocols.parse_protocol(protocol, fmt)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        df = df.iloc[:limit]
    if views < 1:
        raise ValueError(f"--views must be >= 1, got {views}")
    out_dir, counts, errors = Path(out_dir), {"written": 0, "kept": 0, "failed": 0}, []
    keep = []
    # what decides the copies (the settings of steps not in the chain do not; more views do
    # not change the first ones)
    settings = {"chain": list(chain), "seed": seed,
                **{k: v for step, k, v in (("noise", "snr_db", snr_db),
                                           ("mp3", "mp3_quality", mp3_quality),
                                           ("rawboost", "rawboost", rawboost),
                                           ("channel", "channel_p", channel_p))
                   if step in chain}}
    check_settings(out_dir, settings)
    (out_dir / "flac").mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / SETTINGS, json.dumps(settings, indent=1) + "\n")
    # augmented views get ids of their own (they train beside their sources); a test copy
    # keeps its source's id
    views_named = views > 1 or bool(set(chain) & {"rawboost", "channel"})
    tasks = [(row, k) for row in df.to_dict("records") for k in range(views)]
    for row, k in tqdm(tasks, desc="degrading", unit="file", disable=not progress):
        name = f"{row['utt_id']}_v{k}" if views_named else row["utt_id"]
        dest = out_dir / "flac" / f"{name}.flac"
        try:
            if dest.exists() and sf.info(str(dest)).frames > 0:
                counts["kept"] += 1
            else:
                y = features.load_audio(protocols.audio_path(row, audio_dir))
                key = [seed, zlib.crc32(row["utt_id"].encode())] + ([k] if views_named else [])
                out = degrade(y, chain, snr_db, mp3_quality, np.random.default_rng(key),
                              rawboost=rawboost, channel_p=channel_p)
                with atomic_output(dest, suffix=".flac") as tmp:
                    sf.write(str(tmp), out, features.SAMPLE_RATE, subtype="PCM_16",
                             format="FLAC")
                counts["written"] += 1
            keep.append({"file": dest.name, "label": row["label"], "attack": row["attack"],
                         "speaker": row["speaker"]})
        except (features.AudioError, OSError, RuntimeError) as e:
            counts["failed"] += 1
            errors.append(f"{name},{type(e).__name__}: {str(e).replace(',', ';')}")
    table = pd.DataFrame(keep, columns=["file", "label", "attack", "speaker"])
    write_text_atomic(out_dir / "labels.csv", table.to_csv(index=False))
    write_text_atomic(out_dir / "errors.csv", "utt_id,error\n" + "".join(f"{e}\n" for e in errors))
    return {**counts, "protocol": str(out_dir / "labels.csv"), "audio": str(out_dir / "flac")}


SETTINGS = "settings.json"  # what made the copies of an --out folder


def check_settings(out_dir, settings):
    """Refuse to add to (or keep the copies of) an ``--out`` folder made with other settings:
    its copies would be listed as this run's. A folder of copies without ``settings.json``
    (an older release's) is refused too; an empty or new folder is fine."""
    record = Path(out_dir) / SETTINGS
    if record.is_file():
        try:
            old = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            old = None
        if old == settings:
            return
        if isinstance(old, dict):
            diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items()
                             if old.get(k) != v)
            raise ValueError(f"{out_dir} holds copies made with other settings ({diff}; "
                             f"{record}): choose another --out, or remove it to start again")
        raise ValueError(f"{record} is not readable: choose another --out")
    if any((Path(out_dir) / "flac").glob("*.flac")):
        raise ValueError(f"{out_dir} holds copies but no {SETTINGS} (made by an older "
                         "release, or not by this script): choose another --out")


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--dataset-root", help="ASVspoof 2019 LA folder (with --split)")
    ap.add_argument("--split", default="dev", help="train, dev or eval (with --dataset-root)")
    ap.add_argument("--protocol", help="any supported protocol instead of --dataset-root")
    ap.add_argument("--audio-dir", help="the audio of --protocol")
    ap.add_argument("--out", required=True, help="output folder (flac/, labels.csv)")
    ap.add_argument("--chain", default=",".join(CHAIN),
                    help="comma-separated steps, in order, from: " + ", ".join(STEPS))
    ap.add_argument("--snr", type=number(float, -60, 120), default=SNR_DB,
                    help="noise level, dB below the signal (-60 to 120)")
    ap.add_argument("--mp3-quality", type=number(float, 0, 1), default=MP3_QUALITY,
                    help="libsndfile MP3 compression level, 0 (best) to 1 (smallest)")
    ap.add_argument("--seed", type=number(int, 0), default=0,
                    help="seed of the noise and random steps (>= 0)")
    ap.add_argument("--views", type=number(int, 1, 1000), default=1,
                    help="copies per utterance (K > 1 names them <id>_v<k>)")
    ap.add_argument("--rawboost", type=number(int, 1, 8), default=RAWBOOST,
                    help="RawBoost algorithm (1-8) of the rawboost step")
    ap.add_argument("--channel-p", type=number(float, 0, 1), default=CHANNEL_P,
                    help="probability of each codec / dropout / reverb draw of the channel "
                         "step")
    ap.add_argument("--limit", type=number(int, 1), help="only the first N protocol entries")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.protocol:
            if not args.audio_dir:
                raise ValueError("--protocol needs --audio-dir")
            protocol, audio = Path(args.protocol), Path(args.audio_dir)
        elif args.dataset_root:
            protocol, audio = protocols.resolve_2019_layout(args.dataset_root, args.split)
        else:
            raise ValueError("give --dataset-root (with --split) or --protocol and --audio-dir")
        if not 0 <= args.mp3_quality <= 1:
            raise ValueError("--mp3-quality must be between 0 and 1")
        summary = degrade_corpus(protocol, audio, args.out, tuple(args.chain.split(",")),
                                 args.snr, args.mp3_quality, args.seed, args.limit,
                                 args.views, args.rawboost, args.channel_p)
    except (protocols.ProtocolError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # --out under a file, no permission, a full disk
        raise SystemExit(f"error: {args.out}: cannot write ({e.strerror or e})") from None
    print(f"written {summary['written']}, kept {summary['kept']}, failed {summary['failed']}; "
          f"next: python preprocess.py --protocol {summary['protocol']} --audio-dir "
          f"{summary['audio']} --features waveform --clip-samples 64600")
    return summary


if __name__ == "__main__":
    main()
