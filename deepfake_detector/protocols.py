"""Protocol and score-file formats, and the one label convention of the project.

**Labels**: every utterance has a ``label``, ``"bonafide"`` or ``"spoof"`` (the ASVspoof key),
and a ``target``, 1 for spoof and 0 for bonafide (`targets`): the model outputs P(spoof).

Formats read here (detected from the first line, or named):

- ``asvspoof2019``: ``LA_0079 LA_T_1004644 - A01 spoof`` (LA/PA CM protocols),
- ``asvspoof2021``: LA/DF ``trial_metadata.txt`` keys,
- ``asvspoof5``: the ASVspoof 5 TSV,
- ``csv``: a header with ``file,label`` (+ optional ``speaker``, ``attack``), as In-the-Wild.

Score files (`read_score_file`) and ASV score files (`read_asv_scores`) are read here too.
"""

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd

# -----------------------------------------------------------------------------
LABELS = ("bonafide", "spoof")  # target 0 = bonafide, 1 = spoof (model output = P(spoof))
FORMATS = ("asvspoof2019", "asvspoof2021", "asvspoof5", "csv")
MAX_LINE = 4096  # longest line of a protocol or score file, in characters
MAX_ID_BYTES = 200  # longest utterance id (UTF-8 bytes): ids name files of at most 255 bytes
_BONAFIDE_WORDS = {"bonafide", "bona-fide", "bona_fide", "bona fide", "genuine", "real"}
_SPOOF_WORDS = {"spoof", "fake", "deepfake", "spoofed"}
# (key column, attack column, speaker column, utterance column) for whitespace protocols
_COLUMNS = {
    # LA_0079 LA_T_1004644 - A01 spoof
    "asvspoof2019": dict(n_min=5, n_max=5, key=4, attack=3, speaker=0, utt=1),
    # LA:  LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval
    # DF:  LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -
    "asvspoof2021": dict(n_min=6, n_max=13, key=5, attack=4, speaker=0, utt=1,
                         conditions={"codec": 2, "transmission": 3}),  # DF: "corpus" (below)
    # SPEAKER FLAC_FILE GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP
    "asvspoof5": dict(n_min=9, n_max=10, key=8, attack=7, speaker=0, utt=1,
                      conditions={"codec": 3, "codec_q": 4}),
}
# the condition columns a protocol may carry (`parse_protocol`), for per-condition tables
CONDITIONS = ("codec", "transmission", "corpus", "codec_q")  # DF's "source" column: corpus
DF_MIN_COLUMNS = 9  # a 2021 key line this long is DF (column 4: source corpus), else LA
DEMO_MARKER = "SYNTHETIC_DEMO_CORPUS.txt"  # scripts/make_demo_corpus.py leaves it in LA/
# -----------------------------------------------------------------------------


class ProtocolError(ValueError):
    """A protocol file that cannot be parsed."""


def targets(labels):
    """The training target of each label: 1 = spoof, 0 = bonafide.

    Parameters
    ----------
    labels : array-like of str, shape (n,)
        ``"bonafide"`` or ``"spoof"`` (see `normalize_label`).

    Returns
    -------
    target : np.ndarray of int, shape (n,)
    """
    return (np.asarray(labels, dtype=object) == "spoof").astype(int)


def normalize_label(word, where=""):
    """Map a protocol's key word to ``"bonafide"`` or ``"spoof"``.

    Accepts the spellings used by ASVspoof (``bonafide``/``spoof``), In-the-Wild (``bona-fide``)
    and common CSVs (``real``/``fake``, ``genuine``), case-insensitively.
    """
    w = str(word).strip().lower()
    if w in _BONAFIDE_WORDS:
        return "bonafide"
    if w in _SPOOF_WORDS:
        return "spoof"
    raise ProtocolError(f"{where}unknown label {str(word)[:40]!r}: expected bonafide or spoof")


def check_utt_id(utt, where=""):
    """Refuse an utterance id that could not safely name a file inside an output folder: empty,
    hidden or ``.``/``..``, with a path separator or a NUL byte (``S ../../x - A01 spoof`` would
    otherwise write outside ``--out``). Returns it."""
    if not utt or utt.startswith(".") or any(c in utt for c in "/\\\0"):
        raise ProtocolError(f"{where}utterance id {utt[:60]!r} cannot name a file: ids may not be "
                            "empty, start with '.', or hold '/', '\\' or NUL")
    size = len(utt.encode("utf-8", "surrogateescape"))
    if size > MAX_ID_BYTES:
        raise ProtocolError(f"{where}utterance id {utt[:40]!r}... is {size} bytes long; ids may "
                            f"have at most {MAX_ID_BYTES} (a file name holds 255, and the "
                            "project adds suffixes such as '.npy' and temporary-file names)")
    return utt


def read_text_lines(path):
    """The lines of a text file read as UTF-8 (a byte-order mark dropped), one at a time:
    memory holds one line of at most `MAX_LINE` characters whatever the file's size.

    Raises
    ------
    ProtocolError
        Where the file is not UTF-8, or a line is longer than `MAX_LINE` (a file of one
        gigabyte-long token is not a protocol or a score file).
    """
    limit = 4 * MAX_LINE  # bytes: a UTF-8 character takes at most 4
    with open(path, "rb") as f:
        for lineno in itertools.count(1):
            raw = f.readline(limit + 1)
            if not raw:
                return
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise ProtocolError(f"{path}:{lineno}: line longer than {MAX_LINE} characters; "
                                    "not a protocol or score file")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ProtocolError(f"{path}:{lineno}: not UTF-8 text (byte "
                                    f"{e.object[e.start]:#04x}); save it as UTF-8 (UTF-16 and "
                                    "Latin-1 files are not read)") from None
            if len(line) > MAX_LINE + 2:
                raise ProtocolError(f"{path}:{lineno}: line longer than {MAX_LINE} characters; "
                                    "not a protocol or score file")
            yield line.rstrip("\r\n")


def detect_format(path):
    """Guess a protocol file's format from its first non-empty line.

    Returns
    -------
    fmt : str
        One of ``"asvspoof2019"``, ``"asvspoof2021"``, ``"asvspoof5"``, ``"csv"``.
    """
    path = Path(path)
    first = next((line for line in read_text_lines(path) if line.strip()), None)
    if first is None:
        raise ProtocolError(f"{path}: protocol file is empty")
    if "," in first:
        return "csv"
    cols = first.split()
    keys = [i for i, c in enumerate(cols) if c.lower() in ("bonafide", "spoof")]
    if len(cols) == 5 and 4 in keys:
        return "asvspoof2019"
    if len(cols) >= 6 and 5 in keys and len(cols) != 10:
        return "asvspoof2021"
    if len(cols) in (9, 10) and 8 in keys:
        return "asvspoof5"
    raise ProtocolError(
        f"{path}: cannot tell the protocol format from its first line {first.strip()!r}; "
        f"pass --format ({'|'.join(FORMATS)})"
    )


def parse_protocol(path, fmt=None):
    """Read a protocol file into a table of utterances.

    Parameters
    ----------
    path : str or Path
        ASVspoof 2019 LA/PA protocol, ASVspoof 2021 LA/DF key (``trial_metadata.txt``), ASVspoof 5
        TSV, or a CSV with a header containing ``file`` and ``label`` (optional ``speaker``,
        ``attack``); CSV paths are relative to the audio folder or absolute.
    fmt : str, optional
        One of ``FORMATS``; detected from the first line when omitted.

    Returns
    -------
    df : pandas.DataFrame
        Columns ``utt_id, file, label, attack, speaker`` (``file`` is None for ASVspoof formats,
        whose audio is ``<audio_dir>/<utt_id>.flac``), and the conditions the format carries
        (`CONDITIONS`, `condition_columns`). ``attack`` is ``"-"`` for bonafide.
    """
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"{path}: protocol file not found")
    fmt = fmt or detect_format(path)
    if fmt == "csv":
        df = _parse_csv(path)
    elif fmt in _COLUMNS:
        df = _parse_whitespace(path, fmt)
    else:
        raise ProtocolError(f"unknown protocol format {fmt!r}; expected one of {FORMATS}")
    if df.empty:
        raise ProtocolError(f"{path}: no utterances listed")
    dup = df["utt_id"][df["utt_id"].duplicated()]
    if len(dup):
        raise ProtocolError(f"{path}: utterance ids listed more than once, e.g. {dup.iloc[0]!r}")
    return df


def iter_columns(path):
    """Yield ``(lineno, columns, line)`` for each non-blank line of a whitespace-separated text
    file (protocols, score files; UTF-8, `read_text_lines`), so errors can name the file and
    line."""
    for lineno, line in enumerate(read_text_lines(path), 1):
        cols = line.split()
        if cols:
            yield lineno, cols, line.strip()


def condition_columns(fmt, cols):
    """Name -> column index of the conditions a protocol line of ``fmt`` carries (ASVspoof
    2021 LA: codec, transmission; 2021 DF: codec, corpus (its "source" column: vcc2018,
    vcc2020, asvspoof); ASVspoof 5: codec, codec_q)."""
    named = dict(_COLUMNS[fmt].get("conditions", {}))
    if fmt == "asvspoof2021" and len(cols) >= DF_MIN_COLUMNS:
        named["corpus"] = named.pop("transmission")
    return {k: i for k, i in named.items() if i < len(cols)}


def _parse_whitespace(path, fmt):
    spec = _COLUMNS[fmt]
    rows, names = [], None
    for lineno, cols, line in iter_columns(path):
        where = f"{path}:{lineno}: "
        if not spec["n_min"] <= len(cols) <= spec["n_max"]:
            raise ProtocolError(f"{where}expected {spec['n_min']}-{spec['n_max']} columns for "
                                f"{fmt}, got {len(cols)}: {line[:80]!r}")
        label = normalize_label(cols[spec["key"]], where)
        attack = cols[spec["attack"]]
        if label == "bonafide" or attack.lower() == "bonafide":
            attack = "-"
        conditions = condition_columns(fmt, cols)
        names = names or list(conditions)  # the first line's; a mixed file keeps those
        rows.append((check_utt_id(cols[spec["utt"]], where), None, label, attack,
                     cols[spec["speaker"]],
                     *(cols[conditions[n]] if n in conditions else "-" for n in names)))
    return pd.DataFrame(rows, columns=["utt_id", "file", "label", "attack", "speaker",
                                       *(names or [])])


def _parse_csv(path):
    import io

    df = pd.read_csv(io.StringIO("\n".join(read_text_lines(path))), dtype=str,
                     keep_default_na=False, skipinitialspace=True)
    df.columns = [c.strip().lower() for c in df.columns]
    for col in ("file", "label"):
        if col not in df.columns:
            raise ProtocolError(f"{path}: CSV needs a header with 'file' and 'label' columns, "
                                f"got {list(df.columns)}")
    labels = [normalize_label(w, f"{path}:{i + 2}: ") for i, w in enumerate(df["label"])]
    files = df["file"].str.strip()
    stems = files.map(lambda f: Path(f).with_suffix("").name)
    # utterance id = file stem, or the relative path when stems collide across folders
    if stems.duplicated().any():
        ids = files.map(lambda f: str(Path(f).with_suffix("")).strip("/").replace("/", "__"))
    else:
        ids = stems
    ids = [check_utt_id(u, f"{path}:{i + 2}: ") for i, u in enumerate(ids)]
    # attack: "-" for bonafide; a spoof without a named attack is attributed to "spoof"
    attack = df["attack"] if "attack" in df.columns else [""] * len(df)
    attack = ["-" if lab == "bonafide" else (a if a not in ("", "-") else "spoof")
              for a, lab in zip(attack, labels)]
    speaker = df["speaker"] if "speaker" in df.columns else pd.Series(["-"] * len(df))
    conditions = {c: [v.strip() or "-" for v in df[c]] for c in CONDITIONS if c in df.columns}
    return pd.DataFrame({"utt_id": ids, "file": files, "label": labels,
                         "attack": attack, "speaker": list(speaker), **conditions})


def corpus_info(protocol, audio_dir):
    """What a preprocessed folder was made from (``corpus.json``; train.py records it in every
    model): the protocol and audio folder, and whether they belong to the synthetic demo
    corpus (a `DEMO_MARKER` file in either's folder or up to three folders above).

    Returns
    -------
    info : dict
        ``protocol``, ``audio_dir`` (absolute), ``synthetic_demo`` (bool).
    """
    places = [Path(protocol).resolve().parent, Path(audio_dir).resolve()]
    demo = any((folder / DEMO_MARKER).is_file()
               for place in places for folder in [place, *place.parents][:4])
    return {"protocol": str(Path(protocol).resolve()), "audio_dir": str(Path(audio_dir).resolve()),
            "synthetic_demo": demo}


def resolve_2019_layout(root, split):
    """Find the protocol and audio folder of one split of the ASVspoof 2019 layout.

    Parameters
    ----------
    root : str or Path
        The ``LA`` (or ``PA``) folder as unpacked, or its parent.
    split : {"train", "dev", "eval"}

    Returns
    -------
    protocol, audio_dir : Path
    """
    root = Path(root)
    kind = "trn" if split == "train" else "trl"
    tried = []
    for base in (root, root / "LA", root / "PA"):
        for track in ("LA", "PA"):
            protocol = (base / f"ASVspoof2019_{track}_cm_protocols"
                        / f"ASVspoof2019.{track}.cm.{split}.{kind}.txt")
            audio = base / f"ASVspoof2019_{track}_{split}" / "flac"
            tried.append(str(protocol))
            if protocol.is_file():
                if not audio.is_dir():
                    raise FileNotFoundError(
                        f"found {protocol} but not its audio folder {audio}; "
                        "unpack ASVspoof2019_{track}_{split}.zip there (see data/README.md)")
                return protocol, audio
    raise FileNotFoundError(
        f"no ASVspoof 2019 {split} protocol under {root}; looked for:\n  " + "\n  ".join(tried)
        + "\nsee data/README.md for the expected layout, or pass --protocol and --audio-dir")


def audio_path(row, audio_dir):
    """The audio file of one protocol row: ``file`` if given, else ``<audio_dir>/<utt_id>.flac``
    (or ``.wav`` when only that exists)."""
    audio_dir = Path(audio_dir)
    if row["file"]:
        p = Path(row["file"])
        return p if p.is_absolute() else audio_dir / p
    flac = audio_dir / f"{row['utt_id']}.flac"
    if not flac.exists():
        wav = audio_dir / f"{row['utt_id']}.wav"
        if wav.exists():
            return wav
    return flac


# ----------------------------------------------------------------------------- score files


# Countermeasure score-file layouts, told apart by their columns (`read_score_file`):
# name -> (columns, utterance column, key column or None)
SCORE_LAYOUTS = {
    "2021": (2, 0, None),  # utt_id score (the ASVspoof 2021 packages; scores.txt)
    "2019": (4, 0, 2),  # utt_id attack key score (ASVspoof 2019 tools, AASIST; scores_2019.txt)
    "2019-tdcf": (6, 1, 4),  # speaker utt_id - attack key score (2019 t-DCF package)
}  # and "asvspoof5": a header naming the columns, ``filename cm-score`` (`asvspoof5_header`)


def score_layout(cols):
    """The `SCORE_LAYOUTS` name of a score-file line's columns, or None."""
    for name, (n, _, key) in SCORE_LAYOUTS.items():
        if len(cols) == n and (key is None or cols[key].lower() in ("bonafide", "spoof")):
            return name
    return None


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)",
                     re.IGNORECASE | re.ASCII)


def parse_score(token):
    """A score as written in a score file: a plain ASCII decimal number (``1_000`` and
    non-ASCII digits, which Python's ``float`` accepts, are not scores), or None."""
    return float(token) if _NUMBER.fullmatch(token) else None


def read_score_file(path):
    """Read a countermeasure score file in any layout of `SCORE_LAYOUTS`, detected from its
    first line of scores (a header line is skipped), or an ASVspoof 5 score TSV, told by its
    header (`asvspoof5_header`).

    Returns
    -------
    scores : pandas.Series
        Float scores (higher = more bonafide) indexed by utterance id.
    layout : str
        The layout detected.
    keys : pandas.Series or None
        The bonafide/spoof key of each utterance, for the layouts that carry one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score file {path} not found")
    rows, layout, first, named = [], None, True, None
    for lineno, cols, line in iter_columns(path):
        if cols[0].startswith("#"):
            continue
        header, first = first, False  # only the first line may be a header
        if header and asvspoof5_header(cols):
            layout, named = "asvspoof5", asvspoof5_header(cols)
            continue
        column = -1 if named is None else named[3]
        value = parse_score(cols[column]) if len(cols) > max(column, -1) else None
        if value is None:
            if header:
                continue
            raise ValueError(f"{path}:{lineno}: score {cols[column][:40]!r} is not a number"
                             if len(cols) > max(column, -1) else
                             f"{path}:{lineno}: expected {named[0]} columns, got {len(cols)}")
        layout = layout or score_layout(cols)
        n, utt, key = named[:3] if named else SCORE_LAYOUTS.get(layout, (None, None, None))
        if layout is None or len(cols) != n:
            raise ValueError(
                f"{path}:{lineno}: expected the columns of one layout throughout: "
                + "; ".join(f"{k}: {v[0]} columns" for k, v in SCORE_LAYOUTS.items())
                + f"; asvspoof5: a header with filename and cm-score (got {len(cols)}: "
                  f"{line[:80]!r})")
        rows.append((cols[utt], value, cols[key].lower() if key is not None else None))
    if not rows:
        raise ValueError(f"{path}: no scores")
    ids = [r[0] for r in rows]
    scores = pd.Series([r[1] for r in rows], index=ids, dtype=np.float64)
    dup = scores.index[scores.index.duplicated()]
    if len(dup):
        raise ValueError(f"{path}: utterance {dup[0][:60]!r} is scored more than once")
    keys = (pd.Series([normalize_label(r[2], f"{path}: ") for r in rows], index=ids)
            if rows[0][2] is not None else None)
    return scores, layout, keys


def asvspoof5_header(cols):
    """``(columns, utterance column, key column or None, score column)`` of an ASVspoof 5 score
    file from its header line (``filename cm-score``, the organisers' TSV; also the SASV file
    ``spk filename cm-score asv-score sasv-score``, whose CM score is taken), or None."""
    names = [c.lower() for c in cols]
    if "filename" not in names or "cm-score" not in names:
        return None
    key = names.index("cm-label") if "cm-label" in names else None
    return len(cols), names.index("filename"), key, names.index("cm-score")


def read_asv_scores(path):
    """Read an ASVspoof 2019 ASV score file (``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``).

    Each line: ``SOURCE KEY SCORE`` with KEY in target/nontarget/spoof and SOURCE the attack id
    for spoof trials.

    Returns
    -------
    df : pandas.DataFrame
        Columns ``source, key, score``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ASV score file {path} not found")
    rows = []
    for lineno, cols, line in iter_columns(path):
        if len(cols) != 3 or cols[1] not in ("target", "nontarget", "spoof"):
            raise ValueError(f"{path}:{lineno}: expected 'SOURCE target|nontarget|spoof SCORE', "
                             f"got {line[:80]!r}")
        value = parse_score(cols[2])
        if value is None:
            raise ValueError(f"{path}:{lineno}: score {cols[2][:40]!r} is not a number")
        rows.append((cols[0], cols[1], value))
    df = pd.DataFrame(rows, columns=["source", "key", "score"])
    missing = {"target", "nontarget", "spoof"} - set(df["key"])
    if missing:
        raise ValueError(f"{path}: no {', '.join(sorted(missing))} trials; min t-DCF needs all "
                         "three")
    if not np.isfinite(df["score"]).all():
        raise ValueError(f"{path}: NaN or inf ASV scores")
    return df
