"""The audit pipeline: model file + data -> one trunk pass -> diagnostics -> Scorecard."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from genaudit.version import __version__
from genaudit import sanity
from genaudit.data import PRESETS, Dataset, Preprocess, arrange, load_data, stratified_indices
from genaudit.diagnostics import (
    ablation, augmentation_agreement, consistency, importance_correlation, input_noise_agreement, magnitude,
    mi_selectivity, nodes_as_classifiers, noise_robustness, per_sample_magnitude, perplexity, selectivity,
    selectivity_ordered_ablation, single_unit_importance, steadiness,
)
from genaudit.errors import GenauditError
from genaudit.files import model_cache_dir
from genaudit.features import FeatureSet, compute_features, unit_values
from genaudit.models import ModelFile, OnnxSplitter, SplitModel, identify, input_layout, open_model, split
from genaudit.score import components as score_components
from genaudit.score import generalization_score
from genaudit.scorecard import SCHEMA_VERSION, Scorecard

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AuditOptions:
    """What to measure and how; the defaults are the documented default audit."""

    layer: str | None = None            # feature layer (None: the classifier's input)
    layers: str | None = None           # per-layer table: None, "all", or comma-separated layer names
    use_labels: bool = True             # use the data's labels when it has them
    seed: int = 0
    ablation_levels: int = 21
    ablation_repeats: int = 5
    noise_levels: int = 11
    noise_max: float = 2.0
    importance_units: int = 64          # units whose single-unit ablation importance is measured (seeded subset)
    probe_samples: int = 0              # input-space probes rerun the whole model: 0 = off
    layout: str | None = None           # input layout: nchw | nhwc | flat; None = detected from the model
    output: str | None = None           # the output holding the class scores (name or index); None = chosen
    batch_size: int = 256


def audit(
    model: str | Path,
    data: str = "sample",
    *,
    samples: int | None = 2000,
    split_name: str = "train",
    data_dir: str | Path | None = None,
    preprocess: Preprocess = Preprocess(),
    progress: Progress | None = None,
    **options,
) -> Scorecard:
    """Audit one model on (training) data and return its scorecard. `options` are AuditOptions fields.

    Labels are used when the data has them and `use_labels` is true; otherwise accuracy means agreement with
    the model's own clean predictions.
    """
    opts = AuditOptions(**options)
    dataset = load_data(data, split=split_name, data_dir=data_dir, samples=samples, seed=opts.seed,
                        preprocess=preprocess)
    return audit_dataset(model, dataset, opts, progress)


LAYER_WISE = {  # diagnostics that need only the features and classes (no head)
    "selectivity": selectivity,
    "mutual_information": mi_selectivity,
    "steadiness": steadiness,
    "consistency": consistency,
    "magnitude": magnitude,
    "perplexity": perplexity,
    "nodes": nodes_as_classifiers,
}


def layer_wise(fs: FeatureSet, names: set[str] | None = None) -> dict:
    """The layer-wise diagnostics (all, or those in `names`): one row of the per-layer table."""
    return {name: fn(fs) for name, fn in LAYER_WISE.items() if names is None or name in names}


def scorecard_layout(structure: dict) -> dict:
    """Layer-wise results as the scorecard nests them: mutual information under selectivity."""
    out = {k: v for k, v in structure.items() if k != "mutual_information"}
    if "selectivity" in out and "mutual_information" in structure:
        out["selectivity"] = {**out["selectivity"], "mutual_information": structure["mutual_information"]}
    return out


def robustness(cut: SplitModel, fs: FeatureSet, opts: AuditOptions) -> dict:
    """Cumulative ablation and noise robustness of the head on `fs`."""
    return {
        "ablation": ablation(cut.head, fs, levels=opts.ablation_levels, repeats=opts.ablation_repeats,
                             seed=opts.seed),
        "noise": noise_robustness(cut.head, fs, levels=opts.noise_levels, max_scale=opts.noise_max,
                                  seed=opts.seed),
    }


def audit_dataset(model: str | Path, dataset: Dataset, opts: AuditOptions = AuditOptions(),
                  progress: Progress | None = None) -> Scorecard:
    """Audit one model on an already loaded data set (shared by `compare`)."""
    timings = {}
    start = time.perf_counter()
    file, splitter, layout = open_for(model, dataset, opts.layout, opts.output)
    main = splitter.resolve_layer(opts.layer)
    listed = _layer_list(splitter, opts.layers)  # the per-layer table's rows, in graph order
    extra = [name for name in listed if name != main]
    cut = split(splitter, main, extra)
    batch = opts.batch_size if not extra else max(16, opts.batch_size // 8)  # many outputs: smaller batches
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    streams = {name: ([], []) for name in extra}

    def reduce_extra(arrays: list[np.ndarray]) -> None:
        for name, array in zip(extra, arrays):
            streams[name][0].append(unit_values(array).astype(np.float32))
            streams[name][1].append(per_sample_magnitude(array))

    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], len(dataset))

    labels = dataset.y if opts.use_labels else None
    fs = compute_features(cut.trunk, dataset.batches(batch, layout), labels, advance, reduce_extra)
    sanity.check_classifier(fs, labels)
    timings["features"] = time.perf_counter() - start

    start = time.perf_counter()
    structure = layer_wise(fs)
    diagnostics = head_diagnostics(cut, fs, opts, np.asarray(structure["selectivity"]["per_unit"]))
    selectivity_extra = diagnostics.pop("selectivity_extra")
    diagnostics.update(scorecard_layout(structure))
    diagnostics["selectivity"].update(selectivity_extra)
    timings["diagnostics"] = time.perf_counter() - start

    layers_table = None
    if opts.layers:
        start = time.perf_counter()
        rows = {main: _layer_row(cut.layer, cut.op, fs.units, structure)}
        for name in extra:
            values = np.concatenate(streams[name][0])
            row = layer_wise(FeatureSet(values, fs.logits, fs.predictions, labels))
            row["magnitude"] = {"value": float(np.mean(np.concatenate(streams[name][1])))}
            rows[name] = _layer_row(name, splitter.op_of(name), values.shape[1], row)
        layers_table = [rows[name] for name in listed if name in rows]
        timings["layers"] = time.perf_counter() - start

    if opts.probe_samples:
        start = time.perf_counter()
        diagnostics["input"] = input_probes(cut, dataset, fs, opts, layout)
        timings["input_probes"] = time.perf_counter() - start

    card = Scorecard(
        schema_version=SCHEMA_VERSION,
        genaudit_version=__version__,
        model={"path": str(file.path), "sha256": file.sha256, "format": file.format,
               "input_shape": list(splitter.input_shape), "input_layout": layout,
               "output": {"name": splitter.output_name, "index": splitter.output_index,
                          "of": len(splitter.output_names)}, "output_kind": cut.output_kind},
        layer={"name": cut.layer, "op": cut.op, "shape": list(fs.features.shape[1:]), "units": fs.units,
               "default": cut.default},
        data=dataset.spec,
        samples=len(fs.features),
        seed=opts.seed,
        options={k: v for k, v in asdict(opts).items() if k not in ("layer", "seed", "batch_size")},
        label_mode="labels" if fs.labels_used else "predictions",
        classes=int(fs.logits.shape[1]),
        clean_accuracy=fs.clean_accuracy,
        diagnostics=diagnostics,
    )
    card["warnings"] = clean_output_warnings(cut, dataset, fs, layout, opts)
    card["score"] = generalization_score(
        card if not fs.labels_used else {"diagnostics": score_inputs(cut, fs.without_labels(), opts)})
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


def score_inputs(cut: SplitModel, fs: FeatureSet, opts: AuditOptions) -> dict:
    """The diagnostics the generalization score reads, computed on `fs`. The score was fitted on label-free
    audits, so with labels it is computed from the label-free versions of its components (the same number
    with or without labels; the reported diagnostics still use the labels)."""
    needed = score_components()
    found = robustness(cut, fs, opts) if needed & {"ablation", "noise"} else {}
    wanted = needed | ({"mutual_information"} if "selectivity" in needed else set())
    found.update(scorecard_layout(layer_wise(fs, wanted)))
    return found


def open_for(model: str | Path, dataset: Dataset, layout: str | None = None,
             output: str | None = None) -> tuple[ModelFile, OnnxSplitter, str]:
    """Identify and open a model for this data: (file, splitter, the input layout the data is fed in;
    `layout` None = detected, `output` None = chosen)."""
    file, shape = identify(model), dataset.sample_shape
    splitter = open_model(file, shape, model_cache_dir(), layout, output)
    sanity.check_scores(splitter)
    return file, splitter, input_layout(splitter.input_shape, shape, layout)


def accuracy_on(model: str | Path, dataset: Dataset, opts: AuditOptions = AuditOptions()) -> float:
    """Plain accuracy of the whole model on labelled data (e.g. a holdout set), fed as `opts` says."""
    if dataset.y is None:
        raise GenauditError("The holdout data has no labels (y); accuracy on it cannot be measured.")
    _, splitter, layout = open_for(model, dataset, opts.layout, opts.output)
    predictions = predicted_classes(split(splitter, None), dataset.batches(opts.batch_size, layout))
    return float(np.mean(predictions == dataset.y))


def predicted_classes(cut: SplitModel, batches) -> np.ndarray:
    """The whole model's predicted class for every sample of the batches."""
    return np.concatenate([cut.predict(x).reshape(len(x), -1).argmax(axis=1) for x in batches])


def head_diagnostics(cut: SplitModel, fs: FeatureSet, opts: AuditOptions, si: np.ndarray) -> dict:
    """Diagnostics that run the head on modified features: robustness curves and unit importance
    (`si`: the units' class selectivity, which orders the selectivity-ordered ablation)."""
    rng = np.random.default_rng(opts.seed)
    units = np.sort(rng.choice(fs.units, size=min(fs.units, opts.importance_units), replace=False))
    importance = single_unit_importance(cut.head, fs, units)
    return {
        **robustness(cut, fs, opts),
        "selectivity_extra": {
            "ordered_ablation": selectivity_ordered_ablation(cut.head, fs, si, levels=opts.ablation_levels),
            "importance_correlation": {**importance_correlation(si[units], importance), "units": int(len(units))},
        },
    }


def input_probes(cut: SplitModel, dataset: Dataset, fs: FeatureSet, opts: AuditOptions, layout: str) -> dict:
    """Agreement under input noise and mild augmentation, on a seeded stratified subsample."""
    idx = stratified_indices(len(dataset), fs.reference, opts.probe_samples, opts.seed)
    images = np.concatenate(list(dataset.batches(len(idx), indices=idx)))

    def predict(x: np.ndarray) -> np.ndarray:
        chunks = (x[i : i + opts.batch_size] for i in range(0, len(x), opts.batch_size))
        return np.concatenate([cut.predict(arrange(c, layout)) for c in chunks])

    result = {"noise": input_noise_agreement(predict, images, seed=opts.seed)}
    if images.ndim == 4:
        result["augmentation"] = augmentation_agreement(predict, images)
    return result


def _layer_list(splitter, layers: str | None) -> list[str]:
    if not layers:
        return []
    if layers == "all":
        return [layer.name for layer in splitter.layers()]
    return [splitter.resolve_layer(name.strip()) for name in layers.split(",") if name.strip()]


def _layer_row(name: str, op: str, units: int, d: dict) -> dict:
    return {
        "name": name, "op": op, "units": int(units),
        "intra_class_variance_sum": d["steadiness"]["sum"],
        "intra_class_variance_ratio": d["steadiness"]["ratio"],
        "consistency": d["consistency"]["value"],
        "magnitude": d["magnitude"]["value"],
        "perplexity": d["perplexity"]["value"],
        "nodes_accuracy": d["nodes"]["accuracy"],
        "selectivity_mean": d["selectivity"]["mean"],
        "mi_selectivity_mean": d["mutual_information"]["mean"],
    }


PRESET_TRIAL_SAMPLES = 256


def clean_output_warnings(cut: SplitModel, dataset: Dataset, fs: FeatureSet, layout: str,
                          opts: AuditOptions) -> list[str]:
    """Warnings about the clean predictions: one class for every input; labelled accuracy near chance (with
    the preprocessing presets that would fix it, tried on a few batches)."""
    found = [sanity.constant_output(fs.predictions)]
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

        found.append(sanity.preprocessing_advice(fs.clean_accuracy, fs.labels, try_preset, list(PRESETS), len(idx)))
    return [w for w in found if w]
