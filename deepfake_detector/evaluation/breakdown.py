"""The table every report is made from (`score_table`: one row per utterance, its score and
P(spoof)), and its tables by subset: per attack (each attack's spoofs against all bonafide
utterances) and per condition (codec, transmission channel, source corpus, codec quality: the
bonafide and spoof utterances of one condition against each other), as the ASVspoof 2021 and
ASVspoof 5 evaluations break their results down.

Class roles as everywhere: bonafide is the target of every EER and DCF; "detected" counts
utterances called spoof (P(spoof) >= threshold).
"""

import itertools

import numpy as np
import pandas as pd

from . import metrics as M
from ..protocols import CONDITIONS


def score_table(df, logits):
    """The table every report is made from: one row per utterance of ``df`` (a manifest or
    protocol table) with its ASVspoof score and P(spoof).

    Parameters
    ----------
    df : pandas.DataFrame
        ``utt_id, speaker, attack, label`` per utterance.
    logits : array, shape (n,)
        Log-odds of spoof, ``log(P(spoof) / P(bonafide))``.

    Returns
    -------
    table : pandas.DataFrame
        ``utt_id, speaker, attack, label, score, p_spoof`` with ``score = -logits`` (higher =
        more bonafide) and ``p_spoof = sigmoid(logits)``, and the condition columns of ``df``
        (`protocols.CONDITIONS`: codec, transmission, ...), when it has them.
    """
    logits = np.asarray(logits, dtype=np.float64)
    conditions = {c: np.asarray(df[c]).astype(str) for c in CONDITIONS if c in df.columns}
    return pd.DataFrame({"utt_id": np.asarray(df["utt_id"]), "speaker": np.asarray(df["speaker"]),
                         "attack": np.asarray(df["attack"]), "label": np.asarray(df["label"]),
                         "score": -logits, "p_spoof": M.sigmoid(logits), **conditions})


def per_attack_table(table, threshold, asv=None):
    """EER of each attack against all bonafide utterances, and its detection rate.

    Returns
    -------
    df : pandas.DataFrame
        One row per attack (``bonafide`` first): ``n``, ``eer`` (attack vs all bonafide),
        ``min_dcf`` (ASVspoof 5 cost model), ``detected`` (share called spoof at P(spoof) >=
        threshold; for bonafide, the share wrongly called spoof), ``min_tdcf`` with ASV scores
        (None when undefined for that attack, with the reason in ``min_tdcf_note``).
    """
    bona = table[table["label"] == "bonafide"]
    rows = [{"attack": "bonafide", "n": len(bona), "eer": None, "min_dcf": None,
             "detected": float(np.mean(bona["p_spoof"] >= threshold)), "min_tdcf": None,
             "min_tdcf_note": None}]
    for attack, grp in sorted(table[table["label"] == "spoof"].groupby("attack")):
        row = {"attack": attack, "n": len(grp),
               "eer": M.compute_eer(bona["score"], grp["score"])[0],
               "min_dcf": M.min_dcf(bona["score"], grp["score"])[0],
               "detected": float(np.mean(grp["p_spoof"] >= threshold)), "min_tdcf": None,
               "min_tdcf_note": None if asv is not None else "no ASV scores"}
        if asv is not None:  # the ASV spoof trials of this attack only
            sub = asv[(asv["key"] != "spoof") | (asv["source"] == attack)]
            t = M.min_tdcf(bona["score"], grp["score"], sub)
            row["min_tdcf"], row["min_tdcf_note"] = t["min_tdcf"], t.get("reason")
        rows.append(row)
    return pd.DataFrame(rows)


def condition_factors(table):
    """The condition columns of ``table`` (`protocols.CONDITIONS`) with more than one value,
    or a single value other than ``-``: what a per-condition table can break down."""
    return [c for c in CONDITIONS if c in table.columns
            and (table[c].nunique() > 1 or set(table[c]) - {"-"})]


def per_condition_table(table):
    """EER and the ASVspoof 5 metrics of every condition: each value of each condition column
    (e.g. codec ``mp3``), and each combination of two columns (e.g. codec ``alaw`` with
    transmission ``ita_tx``, the ASVspoof 2021 LA conditions), the bonafide and spoof
    utterances of that condition against each other.

    Returns
    -------
    df : pandas.DataFrame
        One row per condition: ``factor`` (e.g. ``codec`` or ``codec+transmission``),
        ``condition`` (its value, ``alaw+ita_tx`` for pairs), ``n_bonafide``, ``n_spoof``,
        ``eer``, ``min_dcf``, ``act_dcf``, ``cllr`` (None, with ``note``, when the condition
        lacks one class). Empty when the scores carry no conditions.
    """
    factors = condition_factors(table)
    groups = [[f] for f in factors] + [list(p) for p in itertools.combinations(factors, 2)]
    rows = []
    for cols in groups:
        for value, grp in table.groupby(cols, sort=True):
            value = value if isinstance(value, tuple) else (value,)
            bona = grp.loc[grp["label"] == "bonafide", "score"].to_numpy(np.float64)
            spoof = grp.loc[grp["label"] == "spoof", "score"].to_numpy(np.float64)
            row = {"factor": "+".join(cols), "condition": "+".join(map(str, value)),
                   "n_bonafide": len(bona), "n_spoof": len(spoof), "eer": None,
                   "min_dcf": None, "act_dcf": None, "cllr": None, "note": None}
            if len(bona) and len(spoof):
                m = M.asvspoof5_metrics(bona, spoof)
                row.update({k: m[k] for k in ("eer", "min_dcf", "act_dcf", "cllr")})
            else:
                row["note"] = "needs bonafide and spoof utterances"
            rows.append(row)
    return pd.DataFrame(rows, columns=["factor", "condition", "n_bonafide", "n_spoof", "eer",
                                       "min_dcf", "act_dcf", "cllr", "note"])
