"""`genaudit suspects`: the audited training samples ranked by how likely the model memorized them (a wrong
or atypical label it fits by rote), from the trained model and its training data alone, or from the checkpoints of
its training run. The suspicion itself is defined in `genaudit.diagnostics.memorization`; this module makes the
per-sample table and its thumbnails."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from genaudit.data import arrange
from genaudit.diagnostics.memorization import (SHIFTS, across_checkpoints, given_label_confidence, given_probability,
                                                memorized, shifted, signals, suspicion, weak, with_shifts)
from genaudit.diagnostics.neighbours import K, label_agreement, neighbours_in, vote_of, voters
from genaudit.registry import Context


def judged(c: Context) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every audited sample judged by one model: its signals (disagreeing neighbours of 10 per space), its
    suspicion, and the model's probability of its given label."""
    found = signals(c, every=True)
    return found, suspicion(found), given_label_confidence(c, voters(c, every=True))


def shifted_doubt(done, dataset, batch: int, progress=None) -> np.ndarray | None:
    """1 - the model's probability of each audited sample's given label, averaged over the image moved by two
    pixels in each of four directions (`SHIFTS`): four more passes of the whole model over the samples, in
    batches (`progress(samples done, samples)` after each). None when the samples are not images (N x C x H x W
    once preprocessed)."""
    labels, kind, total = done.fs.labels, done.cut.output_kind, np.zeros(len(dataset))
    for start in range(0, len(dataset), batch):
        x = dataset.preprocess(dataset.x[start : start + batch])
        if x.ndim != 4:
            return None
        for dy, dx in SHIFTS:
            outputs = done.cut.predict(arrange(np.ascontiguousarray(shifted(x, dy, dx)), done.layout))
            total[start : start + len(x)] += 1.0 - given_probability(outputs, labels[start : start + len(x)], kind)
        if progress is not None:
            progress(start + len(x), len(dataset))
    return total / len(SHIFTS)


def rows(c: Context, ids: list, found: dict[str, np.ndarray], score: np.ndarray, confidence: np.ndarray,
         thumbnail: Callable[[int], str | None] | None = None, top: int = 0,
         shifts: np.ndarray | None = None) -> list[dict]:
    """One row per audited sample, most suspicious by `score` first: index (its place in the source), label,
    predicted, suggested (the input-space neighbours' vote), suspicion, doubt (1 - `confidence`, the model's
    probability of the given label), `shifted_doubt` (the same on shifted images, when the suspicion read it)
    and the signals in `found`; the first `top` rows also get `thumbnail(n)` (an image of audited sample n) when
    it is given."""
    indices, distances = neighbours_in(c, "input", every=True)
    suggested = vote_of(indices[:, :K], distances[:, :K], c.fs.labels)
    order = np.lexsort((np.arange(len(score)), -score))  # most suspicious first; ties by audited order
    table = [{"index": ids[n] if isinstance(ids[n], str) else int(ids[n]), "label": int(c.fs.labels[n]),
              "predicted": int(c.fs.predictions[n]), "suggested": int(suggested[n]), "suspicion": float(score[n]),
              "doubt": float(1.0 - confidence[n]),
              **({} if shifts is None else {"shifted_doubt": float(shifts[n])}),
              **{name: int(values[n]) for name, values in found.items()}}
             for n in order]
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


def suspects(model: str | Path | Sequence[str | Path], data: Any = "sample", *, top: int = 20,
             thumbnails: bool = False, order: str = "natural", progress=None, **options) -> dict:
    """Rank the audited training samples by suspicion. `model`: a model file, or the checkpoints of one training
    run (files, globs or folders, sorted by the numbers in their names unless `order="given"`; the last is the
    model the table's predictions and summary are of), whose suspicion is `across_checkpoints`. Where the
    neighbours are weak judges, the suspicion also reads the (last) model's doubt on shifted images
    (`with_shifts`, `shifted_doubt`). The keyword options are those of `genaudit.audit`; labels are required
    (suspicion judges the given labels). `thumbnails`: embed PNG thumbnails of the `top` rows (for the HTML
    report). Returns the suspects document (every row, plus a summary and the (last) model's warnings about its
    clean predictions, as `genaudit score` gives them)."""
    from genaudit.comparison import expand
    from genaudit.errors import GenauditError
    from genaudit.options import AuditOptions, DataOptions, build
    from genaudit.pipeline import VOTE_SPACES, clean_output_warnings, trunk_pass
    from genaudit.scorecard import SCHEMA_VERSION
    from genaudit.threads import budget
    from genaudit.version import __version__

    paths = expand([model] if isinstance(model, (str, Path)) else list(model), order)
    data_opts, opts = build(options, DataOptions, AuditOptions)
    dataset = data_opts.load(data, opts.seed)
    if dataset.y is None or not opts.labels:
        raise GenauditError("suspects judges the given training labels, and this data has none (or --no-labels "
                            "was given). Pass data with labels (an .npz with y, a named set, an image folder).")
    files, scores, confidences = [], [], []
    with budget(opts.threads):
        for k, path in enumerate(paths):  # one trunk pass per checkpoint; every sample gets a row
            done = trunk_pass(path, dataset, opts, _share(progress, k, 1, len(paths)), every=True)
            context = Context(done.fs, opts, done.cut, dataset, done.layout, done.spaces)
            found, score, confidence = judged(context)
            files.append({"path": str(done.file.path), "sha256": done.file.sha256, "format": done.file.format})
            scores.append(score)
            confidences.append(confidence)
        summary = {**memorized(context), "checkpoints": len(paths)}  # the last checkpoint's, its judges included
        shifts = shifted_doubt(done, dataset, opts.batch_size,
                               _share(progress, len(paths), len(SHIFTS), len(paths) + len(SHIFTS))) \
            if weak(summary["judges"]) else None  # the last checkpoint's; the whole grows by the four passes
        summary["shifted"] = shifts is not None
        if len(paths) > 1:
            score = across_checkpoints(scores, confidences, shifts)
            confidence = np.mean(np.stack(confidences), axis=0)
        elif shifts is not None:
            score = with_shifts(score, shifts)
        table = rows(context, dataset.ids, found, score, confidence,
                     (lambda n: png_thumbnail(np.asarray(dataset.x[n]))) if thumbnails else None, top, shifts)
        votes = [label_agreement(context, space, every=True) for space in VOTE_SPACES]  # searched by `judged`
        warnings = clean_output_warnings(done.graph, done.cut, dataset, done.fs, done.layout, opts, votes)
    return {
        "schema_version": SCHEMA_VERSION, "genaudit_version": __version__, "model": files[-1], "checkpoints": files,
        "data": dataset.spec, "samples": len(table), "top": top, "warnings": warnings, "summary": summary,
        "rows": table,
    }


def _share(progress, before: int, passes: int, whole: int):
    """The progress of `passes` passes over the samples that start after `before` others, as a share of `whole`
    passes."""
    if progress is None:
        return None
    return lambda done, total: progress(before * total + passes * done, whole * total)


__all__ = ["judged", "png_thumbnail", "rows", "shifted_doubt", "suspects"]
