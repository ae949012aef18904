"""User-facing errors: the CLI prints their message as one paragraph and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GenauditError(Exception):
    """A problem with the user's input (model, data, options), with a message that says how to fix it."""


def _message(exc: BaseException) -> str:
    """An exception's message without surrounding blank space; the exception type's name when it is empty."""
    return str(exc).strip() or type(exc).__name__


def first_line(exc: BaseException, limit: int | None = 300) -> str:
    """The first line of an exception's message (libraries append tracebacks and hints below it), cut to `limit`
    characters; the exception type's name when the message is empty."""
    return _message(exc).splitlines()[0][:limit]


def first_paragraph(exc: BaseException, limit: int = 2000) -> str:
    """The first paragraph of an exception's message (up to its first blank line), its lines joined: the part
    where libraries such as MLflow say what is wrong and how to fix it. Past `limit` characters (a server may
    answer with a whole page) it is cut after the last whole word, marked with '…'."""
    paragraph = " ".join(_message(exc).split("\n\n")[0].split())
    if len(paragraph) <= limit:
        return paragraph
    return paragraph[: limit + 1].rsplit(" ", 1)[0] + "…"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' Did you mean 'X'?' for the choice closest to a misspelled `word` (difflib's ratio of at least 0.6), or
    '' when none is close: the end of a sentence that refused `word`."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
