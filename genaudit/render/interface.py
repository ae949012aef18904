"""The renderer interface: one class per output format, each able to render the documents genaudit produces (a
scorecard, a comparison, a validation study, a suspects table). Renderers read only those documents."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from typing import TextIO


class Renderer(ABC):
    """A format. Each method writes one document to `stream`; `text` renders into a string instead."""

    name: str = ""
    # True for a format that writes the documents themselves (every key and value, null for a missing one), not a
    # report for people: what such a format shows is checked against the document, not against a report's wording
    verbatim: bool = False

    def __init__(self, stream: TextIO):
        self.stream = stream

    @abstractmethod
    def report(self, card: dict, failures: list[str] | None = None) -> None:
        """One model's scorecard, with the CI checks that failed (if any)."""

    @abstractmethod
    def comparison(self, result: dict) -> None:
        """A compared series of models (genaudit compare / watch)."""

    @abstractmethod
    def validation(self, study: dict) -> None:
        """A validation study (genaudit validate)."""

    @abstractmethod
    def suspects(self, result: dict) -> None:
        """The training samples ranked by suspicion (genaudit suspects): its `top` rows."""

    @classmethod
    def text(cls, method: str, *args) -> str:
        """What `method` would write, as a string (e.g. for `--html PATH`)."""
        buffer = io.StringIO()
        getattr(cls(buffer), method)(*args)
        return buffer.getvalue()
