"""The JSON format: the documents themselves (scorecard v1, comparison, study), rounded for byte-identity."""

from __future__ import annotations

from genaudit.render.interface import Renderer
from genaudit.scorecard import to_json


class JsonRenderer(Renderer):
    name = "json"
    verbatim = True

    def report(self, card: dict, failures: list[str] | None = None) -> None:
        self.stream.write(to_json(card))

    def comparison(self, result: dict) -> None:
        self.stream.write(to_json(result))

    def validation(self, study: dict) -> None:
        self.stream.write(to_json(study))

    def suspects(self, result: dict) -> None:
        self.stream.write(to_json(result))
