"""How a recording's window scores become one verdict: the rules predict.py, serve.py and
scripts/long_audio.py share.

A recording is scored in windows of the run's length (about 4 s) every 2 s (`inference`).
Each rule turns the windows' log-odds of spoof into one log-odds, compared with the run's
threshold as one window's would be, and names the windows that decided it:

- ``max``: the most spoof-like window. One spoof-like window is enough, so the longer the
  recording, the more chances of a false alarm (docs/recipes.md, "Long recordings").
- ``mean``: the mean of the windows' P(spoof) (a linear probe's own: it was measured on the
  mean). Every window decides; a short spoofed stretch in a long recording is averaged away.
- ``run:K`` (the default): the highest P(spoof) that **K consecutive windows all reach**, so
  the recording is spoof when K windows in a row (K windows of ~4 s every 2 s span about
  2 + 2K seconds) are at or above the threshold. One genuine utterance mistaken for spoof
  reaches at most 3 windows of ~4 s every 2 s; a spoofed stretch of 10 s reaches 4 or more.
  A recording of fewer than K windows needs all of them (its least spoof-like window decides).
  Silent windows are not scored and do not break a run.

The default, ``run:4``, was chosen by measurement (scripts/long_audio.py, docs/recipes.md,
"Long recordings"): over 1.6 hours of long genuine recordings, the imported AASIST-L raised 1.9
false alarms per hour with it (7.5 with ``max``) and found 17 of 18 spliced 10-s stretches;
the linear probe none and 8 of 18 (the mean: none and none). On short recordings it accepts
more genuine speech in domain at the same EER.
"""

import numpy as np

# -----------------------------------------------------------------------------
DEFAULT = "run:4"  # the rule of runs that do not name their own (module docstring)
MAX_RUN = 100  # the longest run:K accepted
# -----------------------------------------------------------------------------


def check(rule):
    """``rule`` if it is ``max``, ``mean`` or ``run:K`` (1 <= K <= `MAX_RUN`), else ValueError
    naming the choices."""
    if rule in ("max", "mean"):
        return rule
    kind, _, k = str(rule).partition(":")
    if kind == "run" and k.isdigit() and 1 <= int(k) <= MAX_RUN:
        return f"run:{int(k)}"
    raise ValueError(f"{rule!r} is not a window rule: max, mean or run:K "
                     f"(K consecutive windows, 1-{MAX_RUN})")


def combine(logits, rule):
    """One log-odds of spoof for a recording from its windows', and the windows that decided.

    Parameters
    ----------
    logits : array, shape (n,)
        Log-odds of spoof of the recording's windows in time order; NaN for silent windows
        (skipped). At least one must be finite.
    rule : str
        ``max``, ``mean`` or ``run:K`` (`check`).

    Returns
    -------
    logit : float
        The recording's log-odds of spoof under ``rule``.
    deciding : list of int
        Indices into ``logits`` of the windows that decided: the most spoof-like one
        (``max``), every scored one (``mean``), or the K consecutive scored windows whose
        least spoof-like window is highest (``run:K``; all of them when fewer than K).
    """
    from scipy.special import expit, logit

    logits = np.asarray(logits, float)
    scored = np.flatnonzero(~np.isnan(logits))
    if scored.size == 0:
        raise ValueError("no scored window")
    z = logits[scored]
    rule = check(rule)
    if rule == "max":
        return float(z.max()), [int(scored[np.argmax(z)])]
    if rule == "mean":
        return float(logit(np.clip(np.mean(expit(z)), 1e-15, 1 - 1e-15))), scored.tolist()
    k = min(int(rule.split(":")[1]), z.size)
    lows = np.lib.stride_tricks.sliding_window_view(z, k).min(axis=1)
    at = int(np.argmax(lows))
    return float(lows[at]), scored[at:at + k].tolist()


def span(rule, window_s, hop_s):
    """The seconds K consecutive windows of ``window_s`` every ``hop_s`` cover, for ``run:K``
    (None for the other rules, or when the window or hop is unknown)."""
    k = check(rule).partition(":")[2]
    return window_s + (int(k) - 1) * hop_s if k and window_s and hop_s else None


def describe(rule, seconds=None):
    """What ``rule`` means, for people: e.g. "4 consecutive windows (about 10 s) at or above
    the threshold". ``seconds``: the span of K windows, when known."""
    rule = check(rule)
    if rule == "max":
        return "the most spoof-like window"
    if rule == "mean":
        return "the mean P(spoof) of all windows"
    k = int(rule.split(":")[1])
    span = f" (about {seconds:.0f} s)" if seconds else ""
    return (f"{k} consecutive windows{span} at or above the threshold "
            "(all of them in a shorter recording)")
