"""The audit pipeline: model file + data -> one trunk pass -> diagnostics -> Scorecard."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genaudit import sanity
from genaudit.data import PRESETS, Dataset, Preprocess, arrange, stratified_indices
from genaudit.diagnostics import of_kind, per_sample_magnitude
from genaudit.diagnostics.memorization import given_probability
from genaudit.errors import GenauditError
from genaudit.estimate import estimate
from genaudit.features import FeatureSet, Rows, compute_features, share_error, unit_values
from genaudit.files import model_cache_dir
from genaudit.metrics import LAYER_METRICS
from genaudit.models import (
    CutModel,
    ModelFile,
    OnnxGraph,
    cut_at,
    identify,
    input_layout,
    open_model,
)
from genaudit.models.runtime import providers_for
from genaudit.options import AuditOptions, DataOptions, build, signature
from genaudit.registry import Context, run
from genaudit.score import components as score_components
from genaudit.score import generalization_score
from genaudit.scorecard import SCHEMA_VERSION, Scorecard, lookup
from genaudit.spaces import SpaceCollector
from genaudit.threads import budget, workers
from genaudit.version import __version__

Progress = Callable[[int, int], None]


def audit(model: str | Path, data: Any = "sample", *, progress: Progress | None = None, **options) -> Scorecard:
    """Audit one model on (training) data and return its scorecard.

    `data` is a spec ('sample', 'mnist', a .npz or image folder) or arrays, `(x, y)` or `{"x": ..., "y": ...}`;
    the keyword options are those of `genaudit score` (DataOptions and AuditOptions, same names). Labels are
    used when the data has them and `labels` is true; otherwise accuracy means agreement with the model's own
    clean predictions.
    """
    data_opts, opts = build(options, DataOptions, AuditOptions)
    return audit_dataset(model, data_opts.load(data, opts.seed), opts, progress)


audit.__signature__ = signature(audit, DataOptions, AuditOptions)


def layer_block(fs: FeatureSet, opts: AuditOptions) -> dict:
    """The layer-wise diagnostics of `fs` (no head needed), nested as the scorecard nests them."""
    return run(of_kind("layer"), Context(fs, opts))


@dataclass
class Pass:
    """One trunk pass over the data and what the diagnostics read: the opened model and its cut, the features
    (`fs`), the voters' rows in the neighbour votes' spaces (`spaces`, kept by a `SpaceCollector`), the reduced
    extra layers of the per-layer table (`streams`: unit values and magnitudes per layer; `listed`: the table's
    layers in graph order), and the seconds each phase took."""

    file: ModelFile
    graph: OnnxGraph
    cut: CutModel
    layout: str
    fs: FeatureSet
    spaces: dict[str, Rows]
    streams: dict[str, tuple[list[np.ndarray], list[np.ndarray]]]
    listed: list[str]
    timings: dict[str, float]


def trunk_pass(model: str | Path, dataset: Dataset, opts: AuditOptions, progress: Progress | None = None,
               every: bool = False) -> Pass:
    """Open `model`, cut it at the feature layer and run the trunk once over `dataset`, keeping the features,
    the early layer's values and the reductions of the per-layer table's layers (`opts.layers`). Inputs are
    checked before any work."""
    timings = {}
    start = time.perf_counter()
    labels = dataset.y if opts.labels else None
    if labels is not None:
        sanity.check_sample_size(labels)  # before any work
    providers = providers_for(opts.device)  # an unusable --device is refused before any work too
    file, graph, layout = open_for(model, dataset, opts.layout, opts.output, labels)
    main = graph.resolve_layer(opts.layer)
    listed = _layer_list(graph, opts.layers)  # the per-layer table's rows, in graph order
    extra = [name for name in listed if name != main]
    early = graph.early_layer()  # the neighbour vote's early space
    outputs = extra + [early] if early not in (None, main, *extra) else extra
    cut = cut_at(graph, main, outputs, opts.threads, providers)
    batch = opts.batch_size if not extra else max(16, opts.batch_size // 8)  # many outputs: smaller batches
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    streams = {name: ([], []) for name in extra}
    # The neighbour votes read the input and early-layer vectors of their voters only (all samples with `every`).
    collector = SpaceCollector.of_voters(len(dataset), labels, opts.seed, every)

    def batches():
        """The preprocessed batches in the model's layout, handed to the collector (the input space) on the way."""
        for x in dataset.batches(batch):
            collector.take("input", x)
            yield arrange(x, layout)

    def reduce_extra(arrays: list[np.ndarray]) -> None:
        for name, array in zip(outputs, arrays):
            if name in streams:
                streams[name][0].append(unit_values(array).astype(np.float32))
                streams[name][1].append(per_sample_magnitude(array))
            if name == early:
                collector.take("early", array)

    seen = 0

    def advance(n: int) -> None:
        nonlocal seen
        seen += n
        if progress is not None:
            progress(seen, len(dataset))

    fs = compute_features(cut.trunk, batches(), labels, advance, reduce_extra)
    sanity.check_classifier(fs, labels)
    if early == main:  # the early layer is the feature layer: its values are the features
        collector.take("early", fs.features)
    timings["features"] = time.perf_counter() - start
    return Pass(file, graph, cut, layout, fs, collector.spaces(), streams, listed, timings)


def audit_dataset(model: str | Path, dataset: Dataset, opts: AuditOptions = AuditOptions(),
                  progress: Progress | None = None) -> Scorecard:
    """Audit one model on an already loaded data set (shared by `compare`), within the thread budget."""
    with budget(opts.threads):
        return _audit_dataset(model, dataset, opts, progress)


def _audit_dataset(model: str | Path, dataset: Dataset, opts: AuditOptions, progress: Progress | None) -> Scorecard:
    done = trunk_pass(model, dataset, opts, progress)
    file, graph, cut, layout, fs, timings = done.file, done.graph, done.cut, done.layout, done.fs, done.timings
    labels = fs.labels

    start = time.perf_counter()
    context = Context(fs, opts, cut, dataset, layout, done.spaces)
    diagnostics = run(of_kind("layer", "head", "space"), context, workers(opts.threads))
    timings["diagnostics"] = time.perf_counter() - start

    layers_table = None
    if opts.layers:
        start = time.perf_counter()
        rows = {cut.layer: _layer_row(cut.layer, cut.op, fs.units, diagnostics)}
        for name, (values, magnitudes) in done.streams.items():
            values = np.concatenate(values)
            block = layer_block(FeatureSet(values, fs.logits, fs.predictions, labels), opts)
            block["magnitude"] = {"value": float(np.mean(np.concatenate(magnitudes)))}  # of the maps
            rows[name] = _layer_row(name, graph.op_of(name), values.shape[1], block)
        layers_table = [rows[name] for name in done.listed if name in rows]
        timings["layers"] = time.perf_counter() - start

    if opts.probes:
        start = time.perf_counter()
        diagnostics.update(run(of_kind("input"), context))
        timings["input_probes"] = time.perf_counter() - start

    card = Scorecard(
        schema_version=SCHEMA_VERSION,
        genaudit_version=__version__,
        model={"path": str(file.path), "sha256": file.sha256, "format": file.format,
               "input_shape": list(graph.input_shape), "input_layout": layout,
               "output": {"name": graph.output_name, "index": graph.output_index,
                          "of": len(graph.output_names)}, "output_kind": cut.output_kind,
               "provider": cut.provider},
        layer={"name": cut.layer, "op": cut.op, "shape": list(fs.features.shape[1:]), "units": fs.units,
               "default": cut.default},
        data=dataset.spec,
        samples=len(fs.features),
        seed=opts.seed,
        options=opts.record(),
        label_mode="labels" if fs.labels_used else "predictions",
        classes=int(fs.logits.shape[1]),
        clean_accuracy=fs.clean_accuracy,
        clean_accuracy_standard_error=share_error(fs.clean_accuracy, len(fs.predictions)),
        diagnostics=diagnostics,
    )
    votes = [lookup(diagnostics, f"neighbours.{space}.reference_agreement") for space in VOTE_SPACES]
    card["warnings"] = clean_output_warnings(graph, cut, dataset, fs, layout, opts, votes)
    card["estimate"] = estimate(card)
    start = time.perf_counter()
    card["score"] = generalization_score(
        card if not fs.labels_used else {"diagnostics": score_inputs(context)})
    if fs.labels_used:  # the label-free rerun of the score's components
        timings["score"] = time.perf_counter() - start
    if layers_table is not None:
        card["layers"] = layers_table
        steadiest = max(layers_table, key=lambda r: r["intra_class_variance_sum"])
        card["regularize_layer"] = {
            "name": steadiest["name"],
            "why": "largest aggregated intra-class variance (Σ over units): where NSR would help most",
        }
    card.timings = timings
    card.unit_values = fs.unit_values()
    return card


def score_inputs(context: Context) -> dict:
    """The label-free versions of the diagnostics the generalization score reads, for a labelled audit's
    `context`. The score was fitted on label-free audits, so with labels it is computed from the label-free
    versions of its components (the same number with or without labels; the reported diagnostics still use the
    labels). The rerun shares the labelled diagnostics' head outputs (`Context.common`) and their samples
    (`head_view`): its ablation compares the predictions already made on each variant with the clean
    predictions, without evaluating the head again."""
    needed = score_components()
    return run([d for d in of_kind("layer", "head") if d.top in needed], context.without_labels())


def open_for(model: str | Path, dataset: Dataset, layout: str | None = None, output: str | None = None,
             labels: np.ndarray | None = None) -> tuple[ModelFile, OnnxGraph, str]:
    """Identify and open a model for this data: (file, graph, the input layout the data is fed in;
    `layout` None = detected, `output` None = chosen, among the outputs with enough classes for `labels`)."""
    file, shape = identify(model), dataset.sample_shape
    classes = int(labels.max()) + 1 if labels is not None and len(labels) else None
    graph = open_model(file, shape, model_cache_dir(), layout, output, classes)
    sanity.check_scores(graph)
    return file, graph, input_layout(graph.input_shape, shape, layout)


def accuracy_on(model: str | Path, dataset: Dataset, opts: AuditOptions = AuditOptions()) -> float:
    """Plain accuracy of the whole model on labelled data (e.g. a holdout set), fed as `opts` says."""
    if dataset.y is None:
        raise GenauditError("The holdout data has no labels (y); accuracy on it cannot be measured.")
    _, graph, layout = open_for(model, dataset, opts.layout, opts.output, dataset.y)
    cut = cut_at(graph, None, threads=opts.threads, providers=providers_for(opts.device))
    predictions = predicted_classes(cut, dataset.batches(opts.batch_size, layout), finite=True)
    return float(np.mean(predictions == dataset.y))


def predicted_classes(cut: CutModel, batches, finite: bool = False) -> np.ndarray:
    """The whole model's predicted class for every sample of the batches (`finite`: refuse non-finite scores)."""
    found = []
    for x in batches:
        scores = cut.predict(x).reshape(len(x), -1)
        if finite:
            sanity.check_finite_outputs(scores)
        found.append(scores.argmax(axis=1))
    return np.concatenate(found)


def _layer_list(graph, layers: str | None) -> list[str]:
    if not layers:
        return []
    if layers == "all":
        return [layer.name for layer in graph.layers()]
    return [graph.resolve_layer(name.strip()) for name in layers.split(",") if name.strip()]


def _layer_row(name: str, op: str, units: int, block: dict) -> dict:
    """One row of the per-layer table: the layer-wise metrics that declare a column, from a diagnostics block."""
    return {"name": name, "op": op, "units": int(units), **{m.column: lookup(block, m.path) for m in LAYER_METRICS}}


PRESET_TRIAL_SAMPLES = 256


VOTE_SPACES = ("input", "patches")  # the model-free spaces whose vote the labels are held against (sanity.below_vote)


def clean_output_warnings(graph: OnnxGraph, cut: CutModel, dataset: Dataset, fs: FeatureSet, layout: str,
                          opts: AuditOptions, votes: list[float | None]) -> list[str]:
    """Warnings about the clean predictions: one class for every input; few samples; labelled accuracy near
    chance (naming --output when the model has other outputs), far below the best of `votes` (how often the
    labels agree with their neighbours' vote in each of VOTE_SPACES, None where absent) or far below the model's
    mean confidence, with the preprocessing presets that would fix it, tried on a few batches."""
    found = [sanity.constant_output(fs.predictions),
             sanity.small_sample_warning(len(fs.predictions), len(np.unique(fs.reference))),
             sanity.output_advice(graph, fs.clean_accuracy, fs.labels)]
    if fs.labels_used:
        idx = stratified_indices(len(dataset), dataset.y, PRESET_TRIAL_SAMPLES, opts.seed)
        channels = dataset.x.shape[1] if dataset.x.ndim == 4 else None

        used = dataset.preprocess

        def try_preset(name: str) -> float | None:
            pre = Preprocess.from_preset(name, channels=used.channels, resize=used.resize)
            if not pre.fits(channels) or (pre.scale, pre.mean, pre.std) == (used.scale, used.mean, used.std):
                return None  # does not apply to these images, or is what was used
            trial = Dataset(dataset.x, dataset.y, pre)
            predictions = predicted_classes(cut, trial.batches(opts.batch_size, layout, idx))
            return float(np.mean(predictions == dataset.y[idx]))

        confidence = float(np.mean(given_probability(fs.logits, fs.predictions, cut.output_kind)))
        found.append(sanity.preprocessing_advice(fs.clean_accuracy, fs.labels, try_preset, list(PRESETS), len(idx),
                                                 vote=max((v for v in votes if v is not None), default=None),
                                                 confidence=confidence))
    return [w for w in found if w]
