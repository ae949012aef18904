"""The audit pipeline: model file + data spec -> one trunk pass -> diagnostics -> Scorecard."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from genaudit import __version__
from genaudit.data import Preprocess, load_data
from genaudit.diagnostics import ablation, noise_robustness, selectivity
from genaudit.errors import GenauditError
from genaudit.features import FeatureSet, compute_features
from genaudit.models import fit_input, identify, open_model, split
from genaudit.scorecard import SCHEMA_VERSION, Scorecard


def default_cache_dir() -> Path:
    """Converted models are cached under $GENAUDIT_CACHE, else the user cache folder."""
    if os.environ.get("GENAUDIT_CACHE"):
        return Path(os.environ["GENAUDIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genaudit"


def audit(
    model: str | Path,
    data: str = "sample",
    *,
    layer: str | None = None,
    use_labels: bool = True,
    samples: int | None = 2000,
    seed: int = 0,
    preprocess: Preprocess = Preprocess(),
    data_dir: str | Path | None = None,
    split_name: str = "train",
    ablation_levels: int = 21,
    ablation_repeats: int = 5,
    noise_levels: int = 11,
    noise_max: float = 2.0,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Scorecard:
    """Audit one model on (training) data and return its scorecard.

    Labels are used when the data has them and `use_labels` is true; otherwise accuracy means agreement with
    the model's own clean predictions.
    """
    timings = {}
    start = time.perf_counter()
    file = identify(model)
    dataset = load_data(data, split=split_name, data_dir=data_dir, samples=samples, seed=seed, preprocess=preprocess)
    data_shape = dataset.sample_shape
    splitter = open_model(file, data_shape, default_cache_dir())
    dataset.flatten = fit_input(splitter.input_shape, data_shape)
    cut = split(splitter, layer)
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], len(dataset))

    labels = dataset.y if use_labels else None
    fs = compute_features(cut.trunk, dataset.batches(batch_size), labels, advance)
    check_classifier(fs, labels)
    timings["features"] = time.perf_counter() - start

    start = time.perf_counter()
    diagnostics = {
        "ablation": ablation(cut.head, fs, levels=ablation_levels, repeats=ablation_repeats, seed=seed),
        "noise": noise_robustness(cut.head, fs, levels=noise_levels, max_scale=noise_max, seed=seed),
        "selectivity": selectivity(fs),
    }
    timings["diagnostics"] = time.perf_counter() - start

    card = Scorecard(
        schema_version=SCHEMA_VERSION,
        genaudit_version=__version__,
        model={"path": str(file.path), "sha256": file.sha256, "format": file.format,
               "input_shape": list(splitter.input_shape), "output_kind": cut.output_kind},
        layer={"name": cut.layer, "op": cut.op, "shape": list(fs.features.shape[1:]),
               "units": fs.units, "default": cut.default},
        data=dataset.spec,
        samples=len(fs.features),
        seed=seed,
        label_mode="labels" if fs.labels_used else "predictions",
        classes=int(fs.logits.shape[1]),
        clean_accuracy=fs.clean_accuracy,
        diagnostics=diagnostics,
    )
    card.timings = timings
    return card


def check_classifier(fs: FeatureSet, labels: np.ndarray | None) -> None:
    """Refuse outputs that are not class scores, and labels outside the model's classes."""
    if fs.logits.shape[1] < 2:
        raise GenauditError(
            f"The model outputs {fs.logits.shape[1]} value per sample; genaudit audits classifiers whose output "
            "has one score per class (at least 2). Regression and embedding models are not supported."
        )
    if labels is not None and (labels.min() < 0 or labels.max() >= fs.logits.shape[1]):
        raise GenauditError(
            f"The data's labels run from {labels.min()} to {labels.max()}, but the model has "
            f"{fs.logits.shape[1]} classes (0..{fs.logits.shape[1] - 1}). Use data with the model's classes, "
            "or --no-labels to audit against the model's own predictions."
        )
