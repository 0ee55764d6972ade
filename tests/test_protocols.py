"""protocols.py: every protocol format, official protocol files, score files."""

import pytest

from deepfake_detector import protocols
from conftest import FULL_PROTOCOLS, needs_full_protocols

# Real lines of the official ASVspoof 2019 LA protocols (train, dev, eval).
LINES_2019 = """\
LA_0079 LA_T_1138215 - - bonafide
LA_0079 LA_T_1004644 - A01 spoof
LA_0075 LA_D_1105131 - - bonafide
LA_0073 LA_D_1123562 - A03 spoof
LA_0011 LA_E_5118048 - A19 spoof
"""


# ASVspoof 2021 keys (keys/LA/CM/trial_metadata.txt and keys/DF/CM/trial_metadata.txt).
LINES_2021 = """\
LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval
LA_0031 LA_E_5932896 none - bonafide bonafide notrim eval
LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -
TEF2 DF_E_2000013 low_m4a vcc2020 Task1-team20 spoof notrim eval neural_vocoder_nonautoregressive Task1 team20 FF E
"""


# ASVspoof 5 protocol columns: SPEAKER FLAC_FILE GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG
# ATTACK_LABEL KEY TMP
LINES_5 = """\
T_4850 T_0000000000 F - - - AC3 A05 spoof -
T_1138 T_0000000001 M - - - bonafide bonafide bonafide -
D_0062 D_0000000002 F mp3 3 1 - A14 spoof -
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parse_asvspoof2019_lines(tmp_path):
    p = write(tmp_path, "p.txt", LINES_2019)
    assert protocols.detect_format(p) == "asvspoof2019"
    df = protocols.parse_protocol(p)
    assert list(df["utt_id"]) == ["LA_T_1138215", "LA_T_1004644", "LA_D_1105131", "LA_D_1123562",
                                  "LA_E_5118048"]
    assert list(df["label"]) == ["bonafide", "spoof", "bonafide", "spoof", "spoof"]
    assert list(df["attack"]) == ["-", "A01", "-", "A03", "A19"]
    assert list(df["speaker"]) == ["LA_0079", "LA_0079", "LA_0075", "LA_0073", "LA_0011"]


def test_parse_asvspoof2021_la_and_df_keys(tmp_path):
    p = write(tmp_path, "trial_metadata.txt", LINES_2021)
    assert protocols.detect_format(p) == "asvspoof2021"
    df = protocols.parse_protocol(p)
    assert list(df["utt_id"]) == ["LA_E_9332881", "LA_E_5932896", "DF_E_2000011", "DF_E_2000013"]
    assert list(df["label"]) == ["spoof", "bonafide", "spoof", "spoof"]
    assert list(df["attack"]) == ["A07", "-", "A14", "Task1-team20"]


def test_parse_asvspoof5_tsv(tmp_path):
    p = write(tmp_path, "ASVspoof5.train.tsv", LINES_5.replace(" ", "\t"))
    assert protocols.detect_format(p) == "asvspoof5"
    df = protocols.parse_protocol(p)
    assert list(df["utt_id"]) == ["T_0000000000", "T_0000000001", "D_0000000002"]
    assert list(df["label"]) == ["spoof", "bonafide", "spoof"]
    assert list(df["attack"]) == ["A05", "-", "A14"]
    assert list(df["speaker"]) == ["T_4850", "T_1138", "D_0062"]


def test_parse_csv_in_the_wild_spelling(tmp_path):
    p = write(tmp_path, "meta.csv", "file,speaker,label\n0.wav,Alec Guinness,spoof\n"
                                    "1.wav,Alec Guinness,bona-fide\n2.wav,Bob,Bonafide\n")
    assert protocols.detect_format(p) == "csv"
    df = protocols.parse_protocol(p)
    assert list(df["utt_id"]) == ["0", "1", "2"]
    assert list(df["label"]) == ["spoof", "bonafide", "bonafide"]
    assert list(df["attack"]) == ["spoof", "-", "-"]
    assert list(df["speaker"]) == ["Alec Guinness", "Alec Guinness", "Bob"]


def test_csv_ids_stay_unique_when_stems_collide(tmp_path):
    p = write(tmp_path, "l.csv", "file,label\nreal/a.wav,bonafide\nfake/a.wav,spoof\n")
    df = protocols.parse_protocol(p)
    assert list(df["utt_id"]) == ["real__a", "fake__a"]


@pytest.mark.parametrize("text, fmt, message", [
    ("LA_0079 LA_T_1 - A01 maybe\n", "asvspoof2019", "p.txt:1: unknown label 'maybe'"),
    ("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - A01\n", "asvspoof2019",
     "p.txt:2: expected 5-5 columns for asvspoof2019, got 4"),
    ("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_1 - A01 spoof\n", None,
     "listed more than once, e.g. 'LA_T_1'"),
    ("one two three\n", None, "cannot tell the protocol format"),
    ("", None, "protocol file is empty"),
    ("name,key\na.wav,spoof\n", "csv", "needs a header with 'file' and 'label'"),
])
def test_protocol_errors_name_file_and_problem(tmp_path, text, fmt, message):
    p = write(tmp_path, "p.txt", text)
    with pytest.raises(protocols.ProtocolError, match="p.txt") as e:
        protocols.parse_protocol(p, fmt)
    assert message in str(e.value)


@needs_full_protocols
@pytest.mark.parametrize("split, n_bona, n_spoof, attacks", [
    ("train.trn", 2580, 22800, [f"A0{i}" for i in range(1, 7)]),
    ("dev.trl", 2548, 22296, [f"A0{i}" for i in range(1, 7)]),
    ("eval.trl", 7355, 63882, [f"A{i:02d}" for i in range(7, 20)]),
])
def test_full_official_protocols(split, n_bona, n_spoof, attacks):
    df = protocols.parse_protocol(FULL_PROTOCOLS / f"ASVspoof2019.LA.cm.{split}.txt")
    assert (df["label"] == "bonafide").sum() == n_bona
    assert (df["label"] == "spoof").sum() == n_spoof
    assert sorted(df.loc[df["label"] == "spoof", "attack"].unique()) == attacks
    assert set(df.loc[df["label"] == "bonafide", "attack"]) == {"-"}


def test_2019_layout_errors_list_what_was_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match="ASVspoof2019.LA.cm.dev.trl.txt"):
        protocols.resolve_2019_layout(tmp_path, "dev")


def test_asv_and_cm_score_files(tmp_path):
    bad = tmp_path / "asv.txt"
    bad.write_text("bonafide target 1.0\nbonafide maybe 2.0\n")
    with pytest.raises(ValueError, match="asv.txt:2: expected"):
        protocols.read_asv_scores(bad)
    bad.write_text("bonafide target 1.0\nbonafide nontarget 2.0\n")
    with pytest.raises(ValueError, match="no spoof trials"):
        protocols.read_asv_scores(bad)
    cm = tmp_path / "cm.txt"
    cm.write_text("filename cm-score\nLA_E_1 -2.5\nLA_E_2 1e3\n")
    s, layout, keys = protocols.read_score_file(cm)
    assert s.to_dict() == {"LA_E_1": -2.5, "LA_E_2": 1000.0} and layout == "asvspoof5"  # header
    assert keys is None
    cm.write_text("LA_E_1 1\nLA_E_1 2\n")
    with pytest.raises(ValueError, match="'LA_E_1' is scored more than once"):
        protocols.read_score_file(cm)


@pytest.mark.parametrize("text, layout", [
    ("LA_E_1 -2.5\nLA_E_2 1e3\n", "2021"),  # utt_id score
    ("LA_E_1 A07 spoof -2.5\nLA_E_2 - bonafide 1e3\n", "2019"),  # utt_id attack key score
    # speaker utt_id - attack key score: the speaker repeats, the utterance does not
    ("LA_0001 LA_E_1 - A07 spoof -2.5\nLA_0001 LA_E_2 - - bonafide 1e3\n", "2019-tdcf"),
])
def test_score_file_layouts_are_detected_by_their_columns(tmp_path, text, layout):
    cm = tmp_path / "cm.txt"
    cm.write_text(text)
    s, got, keys = protocols.read_score_file(cm)
    assert got == layout and s.to_dict() == {"LA_E_1": -2.5, "LA_E_2": 1000.0}
    if layout != "2021":
        assert keys.to_dict() == {"LA_E_1": "spoof", "LA_E_2": "bonafide"}


def test_score_file_with_mixed_layouts_names_the_line(tmp_path):
    cm = tmp_path / "cm.txt"
    cm.write_text("LA_E_1 A07 spoof -2.5\nLA_E_2 1e3\n")
    with pytest.raises(ValueError, match="cm.txt:2: expected the columns of one layout"):
        protocols.read_score_file(cm)


# ----------------------------------------------------------------------------- hostile round 2

def test_a_score_file_of_one_huge_token_is_refused_in_bounded_memory(tmp_path):
    """evaluate.py --scores used to read the whole file (9.4x its size in memory) and quote the
    token whole in its error."""
    import tracemalloc

    path = tmp_path / "huge.txt"
    with open(path, "w") as f:
        for _ in range(64):
            f.write("7" * (1 << 20))  # 64 MB, no newline
    tracemalloc.start()
    with pytest.raises(protocols.ProtocolError, match=r"huge.txt:1: line longer than 4096") as e:
        protocols.read_score_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20 and len(str(e.value)) < 300


@pytest.mark.parametrize("token", ["1_000", "\u0661\u0662", "12abc", "0x10"])
def test_only_plain_numbers_are_scores(tmp_path, token):
    path = write(tmp_path, "s.txt", f"U1 - bonafide 1.5\nU2 - spoof {token}\n")
    with pytest.raises(ValueError, match=r"s.txt:2: score .* is not a number"):
        protocols.read_score_file(path)


def test_only_the_first_line_may_be_a_header(tmp_path):
    ok = write(tmp_path, "h.txt", "utt key score\nU1 - bonafide 1.5\nU2 - spoof -2e1\n")
    scores, layout, _ = protocols.read_score_file(ok)
    assert list(scores) == [1.5, -20.0]
    bad = write(tmp_path, "h2.txt", "utt key score\nU1 - bonafide oops\nU2 - spoof -2\n")
    with pytest.raises(ValueError, match=r"h2.txt:2: score 'oops' is not a number"):
        protocols.read_score_file(bad)


def test_a_long_error_token_is_shortened(tmp_path):
    path = write(tmp_path, "s.txt", "U1 - bonafide 1.5\nU2 - spoof " + "x" * 3000 + "\n")
    with pytest.raises(ValueError) as e:
        protocols.read_score_file(path)
    assert len(str(e.value)) < 200


def test_a_huge_id_is_not_quoted_whole(tmp_path):
    path = write(tmp_path, "p.txt", "SPK ../" + "x" * 3000 + " - A01 spoof\n")
    with pytest.raises(protocols.ProtocolError) as e:
        protocols.parse_protocol(path)
    assert len(str(e.value)) < 300
