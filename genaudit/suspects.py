"""`genaudit suspects`: the audited training samples ranked by how likely the model memorized them (a wrong
or atypical label it fits by rote), from the trained model and its training data alone. The suspicion itself is
defined in `genaudit.diagnostics.memorization`; this module makes the per-sample table and its thumbnails."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from genaudit.diagnostics.memorization import memorized, signals, suspicion
from genaudit.diagnostics.neighbours import K, neighbours_in, vote_of
from genaudit.registry import Context


def rows(c: Context, ids: list, thumbnail: Callable[[int], str | None] | None = None, top: int = 0) -> list[dict]:
    """One row per audited sample, most suspicious first: index (its place in the source), label, predicted,
    suggested (the input-space neighbours' vote), suspicion and its signals (disagreeing neighbours of 10 per
    space); the first `top` rows also get
    `thumbnail(n)` (an image of audited sample n) when it is given."""
    found = signals(c, every=True)
    score = suspicion(found)
    indices, distances = neighbours_in(c, "input", every=True)
    suggested = vote_of(indices[:, :K], distances[:, :K], c.fs.labels)
    order = np.lexsort((np.arange(len(score)), -score))  # most suspicious first; ties by audited order
    table = [{"index": ids[n] if isinstance(ids[n], str) else int(ids[n]), "label": int(c.fs.labels[n]),
              "predicted": int(c.fs.predictions[n]), "suggested": int(suggested[n]), "suspicion": float(score[n]),
              **{name: int(values[n]) for name, values in found.items()}} for n in order]
    if thumbnail is not None:
        for row, n in zip(table[:top], order[:top]):
            row["thumbnail"] = thumbnail(int(n))
    return table


def png_thumbnail(image: np.ndarray) -> str | None:
    """A raw image (C, H, W) as a PNG data URI (grayscale or RGB), None for vectors."""
    import base64
    import io

    from matplotlib.image import imsave

    if image.ndim != 3 or image.shape[0] not in (1, 3):
        return None
    pixels = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    pixels = pixels.astype(np.float64)
    span = pixels.max() - pixels.min()
    buffer = io.BytesIO()
    imsave(buffer, (pixels - pixels.min()) / (span or 1.0), cmap="gray", format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def suspects(model: str | Path, data: Any = "sample", *, top: int = 20, thumbnails: bool = False,
             progress=None, **options) -> dict:
    """Rank the audited training samples by suspicion. The keyword options are those of `genaudit.audit`;
    labels are required (suspicion judges the given labels). `thumbnails`: embed PNG thumbnails of the `top`
    rows (for the HTML report). Returns the suspects document (every row, plus a summary)."""
    from genaudit.errors import GenauditError
    from genaudit.options import AuditOptions, DataOptions, build
    from genaudit.pipeline import trunk_pass
    from genaudit.scorecard import SCHEMA_VERSION
    from genaudit.threads import budget
    from genaudit.version import __version__

    data_opts, opts = build(options, DataOptions, AuditOptions)
    dataset = data_opts.load(data, opts.seed)
    if dataset.y is None or not opts.labels:
        raise GenauditError("suspects judges the given training labels, and this data has none (or --no-labels "
                            "was given). Pass data with labels (an .npz with y, a named set, an image folder).")
    with budget(opts.threads):
        done = trunk_pass(model, dataset, opts, progress, every=True)  # every sample gets a row
        context = Context(done.fs, opts, done.cut, dataset, done.layout, done.spaces)
        table = rows(context, dataset.ids, (lambda n: png_thumbnail(np.asarray(dataset.x[n]))) if thumbnails
                     else None, top)
        summary = memorized(context)
    return {
        "schema_version": SCHEMA_VERSION, "genaudit_version": __version__,
        "model": {"path": str(done.file.path), "sha256": done.file.sha256, "format": done.file.format},
        "data": dataset.spec, "samples": len(table), "top": top, "summary": summary, "rows": table,
    }


__all__ = ["png_thumbnail", "rows", "suspects"]
