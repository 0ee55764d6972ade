"""How a decision is shown to people: P(spoof) with the digits that show on which side of the
threshold it lies, the threshold itself, an ``uncertain`` verdict near it, and file names made
safe for a terminal. predict.py's table, serve.py's page and JSON, and the reports use these;
the run folder (`runs`) knows nothing of them.
"""

from . import aggregate
from .cli import printable

UNCERTAIN_MARGIN = 0.02  # a verdict within this of the threshold (in P(spoof)) is "uncertain"


def decision_digits(p, threshold, least=3, most=12):
    """The fewest decimals (at least ``least``) at which ``p`` rounds to a value on the same
    side of the rounded ``threshold`` as ``p`` is of ``threshold``: a reader comparing the two
    printed numbers sees the decision that was made."""
    for d in range(least, most + 1):
        rp, rt = round(p, d), round(threshold, d)
        if (rp >= rt) == (p >= threshold) and (rp != rt or p == threshold):
            return d
    return most


def format_probability(p, threshold=None):
    """A probability as people read it: 3 decimals, more when they are needed to show on which
    side of ``threshold`` it lies (`decision_digits`)."""
    return f"{p:.{3 if threshold is None else decision_digits(p, threshold)}f}"


def format_threshold(t):
    """A threshold in 6 significant digits, more if those would print one that is not 0.5 as
    0.5 (the default it would be mistaken for)."""
    for digits in range(6, 17):
        text = f"{t:.{digits}g}"
        if t == 0.5 or float(text) != 0.5:
            return text
    return repr(t)


def display_name(name):
    """A file name as a terminal can show it: bytes that are not UTF-8 (kept by Python as
    surrogates) as ``\\xNN``, control characters (newlines, escape sequences) as ``\\n``,
    ``\\x1b``..., so a hostile name can neither break a table nor drive the terminal."""
    return printable(str(name).encode("utf-8", "surrogateescape").decode("utf-8",
                                                                          "backslashreplace"))


def display(result, margin=UNCERTAIN_MARGIN):
    """The texts people read about one scored file (`inference.summarize`): P(spoof), its mean
    and max over windows and the threshold with the digits that show the decision, the margin
    to the threshold, and the verdict: ``uncertain`` when P(spoof) is within ``margin`` of the
    threshold (``uncertain_reason`` "near_threshold") or when the recording is unlike the
    training recordings (``unfamiliar``; reason "unfamiliar", with its unfamiliarity); and
    ``rule``, what the window rule that decided means (`aggregate.describe`)."""
    p, t = result["p_spoof"], result["threshold"]
    reason = ("unfamiliar" if result.get("unfamiliar") else
              "near_threshold" if abs(p - t) < margin else None)
    return {"p_spoof": format_probability(p, t), "threshold": format_threshold(t),
            "margin": f"{p - t:+.{decision_digits(p, t)}f}",
            "p_spoof_mean": format_probability(result["p_spoof_mean"], t),
            "p_spoof_max": format_probability(result["p_spoof_max"], t),
            "verdict": "uncertain" if reason else result["label"],
            "uncertain_reason": reason, "uncertain_margin": f"{margin:g}",
            "rule": aggregate.describe(result["aggregate"], aggregate.span(
                result["aggregate"], result.get("window_s"), result.get("hop_s"))),
            "unfamiliarity": None if result.get("unfamiliarity") is None
            else f"{result['unfamiliarity']:.2f}"}
