"""Conventions every command line of the project shares."""

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of every script: each flag's default once, as ``(default: X)``, unless the
    help text already says it or there is none to say (None, a switch that is off)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
