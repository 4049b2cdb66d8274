"""The one exception type that reaches users as a single line.

Anything raised as :class:`UserError` is a mistake in the user's input (recipe, path, flag) and
the CLI prints ``error: <message>`` and exits with code 2, no traceback (``--debug`` shows it).
Any other exception is a bug in sj_bwsnn and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in user input, reported as one line and exit code 2."""


def closest(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class ShapeError(UserError, ValueError):
    """An input tensor with the wrong layout or rank (``sj_bwsnn.layers.shape``): a user mistake,
    and also a ``ValueError`` as PyTorch users expect from a bad shape."""
