"""Escaping of untrusted text for each format.

Every string a report shows that came from the user's files (paths, image-folder and class names, layer, input
and output names from a model graph, labels, error messages quoting any of them) goes through the function of
its format here, so a file named `<img src=x onerror=alert(1)>.png` is shown as that name and never becomes
markup, and a name with terminal control sequences or Rich markup (`[link=…]`) cannot restyle the terminal.
Numbers and genaudit's own words need no escaping; wrapping them anyway is harmless.
"""

from __future__ import annotations

import html
import re

# C0 and C1 control characters (ESC starts terminal sequences; CR/LF break a table row or a line of a report)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# a spreadsheet reads a cell starting with one of these as a formula (CSV injection)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
# characters with a meaning in (GitHub-flavoured) Markdown text and tables
_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")


def printable(text: object, keep_newlines: bool = False) -> str:
    """`text` with every control character replaced by U+FFFD (visible, never interpreted): one line, or its
    own lines with `keep_newlines` (a message genaudit wrote over several lines)."""
    return (_CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL).sub("\ufffd", str(text))


def html_text(text: object) -> str:
    """`text` for HTML element content or a quoted attribute value."""
    return html.escape(printable(text), quote=True)


def markdown_text(text: object) -> str:
    """`text` for Markdown running text or a table cell: HTML tags neutralized, Markdown syntax and the table
    separator `|` backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", html.escape(printable(text), quote=False))


def markdown_code(text: object) -> str:
    """`text` as a Markdown inline code span: fenced with more backticks than it contains (CommonMark), `|`
    escaped so a table cell holds it; inside a code span HTML is shown, never rendered."""
    body = printable(text).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def terminal_text(text: object, keep_newlines: bool = False) -> str:
    """`text` for a Rich console: Rich markup escaped, control characters (ANSI sequences) made visible."""
    from rich.markup import escape

    return escape(printable(text, keep_newlines))


def csv_cell(value: object) -> object:
    """A CSV cell: text that a spreadsheet would run as a formula gets a leading apostrophe (OWASP's advice),
    control characters made visible; numbers pass unchanged."""
    if not isinstance(value, str):
        return value
    text = printable(value)
    return "'" + text if text.startswith(_FORMULA) else text
