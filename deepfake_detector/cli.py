"""Conventions every command line of the project shares."""

import argparse


def printable(text):
    """``text`` with every character that is not printable (newlines, escape sequences,
    other control characters) shown as its escape, e.g. ``\\n``: names read from a hostile
    file stay on one line and cannot drive a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of every script: each flag's default once, as ``(default: X)``, unless the
    help text already says it or there is none to say (None, a switch that is off)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def number(kind=float, low=None, high=None, above=False):
    """An argparse ``type`` for a finite number of ``kind`` within ``[low, high]`` (``(low,
    high]`` with ``above``): ``nan``, ``inf``, ``1_000`` and out-of-range values are refused
    at parse time with a message naming the flag, instead of hanging or failing deep inside.

    Example: ``ap.add_argument("--hop", type=number(float, 0.1, 60))``.
    """
    import math

    def parse(text):
        try:
            value = kind(text) if "_" not in str(text) else None
        except ValueError:
            value = None
        if value is None or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a finite {kind.__name__}, got {text!r}")
        if (low is not None and (value <= low if above else value < low)) or \
                (high is not None and value > high):
            side = f"above {low:g}" if above else f"at least {low:g}"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: expected {side}" if high is None else
                f"{text} is out of range: expected {side} and at most {high:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
