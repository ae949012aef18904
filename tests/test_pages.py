"""The HTML pages as a browser lays them out, checked without a browser: every image is shown at a size its own
pixels allow (a plot at its own size, a suspect's thumbnail at a whole multiple of it or shrunk evenly, never
stretched), no style rule sizes an image, the suspects form a grid of their own, and the charts' axes of counts
and checkpoint numbers have whole-number ticks."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genaudit.render import html
from genaudit.suspects import png_thumbnail

GOLDEN = Path(__file__).resolve().parent / "golden"
CARD = json.loads((GOLDEN / "score_cnn_layers_probes.json").read_text()) | {"genaudit_version": "test"}
COMPARISON = json.loads((GOLDEN / "compare_clean_random.json").read_text())
STUDY = {
    "models": [{"model": f"{name}.onnx", "run": "r", "holdout_accuracy": acc, "metrics": {"ablation": abl}}
               for name, acc, abl in (("a", 0.9, 0.8), ("b", 0.7, 0.6), ("c", 0.8, 0.5))],
    "data": {"spec": "sample"}, "holdout": {"spec": "holdout.npz"},
    "correlations": {"ablation": {"path": "ablation.auc", "better": "higher", "kendall": 0.3, "spearman": 0.5,
                                  "n": 3, "within_run_kendall_mean": None, "runs": 0, "oriented_kendall": 0.3}},
}
# (channels, height, width) of the thumbnails: an MNIST digit, a CIFAR image, a wide and a tall small image, a
# photo larger than the thumbnail box, a tall thin strip larger than it
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 20, 36), (1, 36, 20), (3, 160, 224), (3, 300, 40)]


def _suspects() -> dict:
    rng = np.random.default_rng(0)
    rows = [{"index": f"img{i}.png", "label": i % 10, "predicted": 1, "suggested": 2, "suspicion": 0.9,
             "thumbnail": png_thumbnail(rng.random(shape))} for i, shape in enumerate(SHAPES)]
    rows += [{"index": "vector", "label": 0, "predicted": 0, "suggested": 1, "suspicion": 0.5},  # no image
             {"index": "bad", "label": 0, "predicted": 0, "suggested": 1, "suspicion": 0.4,
              "thumbnail": "data:image/png;base64,AAAA"}]  # not a PNG: shown without an image
    return {"model": {"path": "m.onnx"}, "data": {"spec": "sample"}, "samples": len(rows), "top": len(rows),
            "summary": {"fraction": 0.1, "suspect_fraction": 0.2, "threshold": 0.5}, "rows": rows}


PAGES = {
    "score": lambda: html.score_page(copy.deepcopy(CARD)),
    "compare": lambda: html.compare_page(copy.deepcopy(COMPARISON)),
    "validate": lambda: html.validation_page(copy.deepcopy(STUDY)),
    "suspects": lambda: html.suspects_page(_suspects()),
}


class _Layout(HTMLParser):
    """Each <img> with its attributes and the classes of the elements it sits in; the page's style sheet."""

    VOID = {"img", "br", "meta"}

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, str]] = []  # (tag, class) of the elements the parser is inside
        self.images: list[tuple[dict, set[str]]] = []
        self.style = ""
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs, {c for _, c in self.open}))
        if tag not in self.VOID:
            self.open.append((tag, attrs.get("class") or ""))

    def handle_endtag(self, tag):
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self.open and self.open[-1][0] == "style":
            self.style += data


def _rules(css: str) -> list[tuple[str, dict[str, str]]]:
    """(selector, {property: value}) of each rule of a flat style sheet."""
    return [(selector.strip(), dict(d.split(":", 1) for d in body.split(";") if d.strip()))
            for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)]


def _intrinsic(src: str) -> tuple[int, int]:
    """The PNG's own (width, height), decoded by Pillow."""
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_image_is_shown_at_a_size_its_pixels_allow(name):
    layout = _Layout(PAGES[name]())
    assert layout.images
    for attrs, inside in layout.images:
        w, h = _intrinsic(attrs["src"])
        shown_w, shown_h = int(attrs["width"]), int(attrs["height"])
        if "suspects" in inside:  # a thumbnail: within the box, at a whole multiple of its size or shrunk evenly
            assert max(shown_w, shown_h) == html.THUMBNAIL or shown_w // w == html.THUMBNAIL // max(w, h)
            if shown_w >= w:
                assert shown_w % w == 0 and shown_h % h == 0 and shown_w // w == shown_h // h, (w, h, attrs)
                assert ("px" in attrs.get("class", "")) == (shown_w > w)  # pixels kept sharp when enlarged
            else:
                assert abs(shown_w * h - shown_h * w) <= (w + h) / 2, (w, h, attrs)  # aspect kept to the pixel
        else:  # a plot, at its own size
            assert (shown_w, shown_h) == (w, h) and "plots" in inside
    for selector, declarations in _rules(layout.style):
        if "img" in selector:  # the width and height attributes alone size every image
            assert not [p for p in declarations if "width" in p or "height" in p or p in ("zoom", "transform")], \
                selector


def test_suspects_are_a_grid_of_thumbnails_apart_from_the_plots():
    page = html.suspects_page(_suspects())
    layout = _Layout(page)
    assert len(layout.images) == len(SHAPES)  # the row without a thumbnail and the one that is no PNG show none
    assert all("suspects" in inside and "plots" not in inside for _, inside in layout.images)
    rules = dict(_rules(layout.style))
    assert rules[".suspects"]["display"] == "grid"
    assert rules[".suspects img.px"]["image-rendering"] == "pixelated"
    assert "image-rendering" not in rules[".suspects img"]  # a shrunk photo is smoothed, not pixelated
    assert page.count("<figure>") == len(_suspects()["rows"])
    for row in _suspects()["rows"]:
        assert (f"given <b>{row['label']}</b> · suggested <b>{row['suggested']}</b>" in page
                and f"suspicion {row['suspicion']:.2f}" in page)
    sizes = {(int(a["width"]), int(a["height"])) for a, _ in layout.images}
    assert sizes == {(84, 84), (96, 96), (72, 40), (40, 72), (96, 69), (13, 96)}


@pytest.mark.parametrize("name", ["score", "compare"])
def test_axes_of_counts_and_checkpoints_have_whole_number_ticks(name, monkeypatch):
    """Two checkpoints, and a layer of four units (at most two per selectivity bin): spans a default locator
    splits into fractions."""
    axes = []
    real = html._png

    def record(plt, fig):
        for ax in fig.axes:
            axes.append((ax.get_xlabel(), ax.get_ylabel(), ax.get_xticks(), ax.get_xlim(), ax.get_yticks(),
                         ax.get_ylim()))
        return real(plt, fig)

    monkeypatch.setattr(html, "_png", record)
    if name == "score":
        card = copy.deepcopy(CARD)
        card["diagnostics"]["selectivity"]["histogram"]["counts"] = [1, 0, 2, 0, 1, 0, 0, 0, 0, 0]
        html.score_page(card)
    else:
        assert len(COMPARISON["scorecards"]) == 2
        PAGES[name]()
    whole = []
    for xlabel, ylabel, xticks, xlim, yticks, ylim in axes:
        for label, ticks, (lo, hi) in ((xlabel, xticks, xlim), (ylabel, yticks, ylim)):
            if label in ("checkpoint #", "units"):
                shown = [t for t in ticks if lo <= t <= hi]
                assert shown and all(float(t).is_integer() for t in shown), (label, shown)
                whole.append(label)
    assert whole == (["units"] if name == "score" else ["checkpoint #", "checkpoint #"])
