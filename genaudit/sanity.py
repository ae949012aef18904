"""Sanity checks on a model's outputs: refusals of outputs that are not class scores, and warnings that the
audit may be measuring the wrong thing.

A model that gives every input the same class is untrained, collapsed, or fed the wrong input; a model whose
clean accuracy on its own training data is near chance is, most often, preprocessed differently from how it
was trained. Both make every diagnostic meaningless, so the report says so first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from genaudit.errors import GenauditError

if TYPE_CHECKING:
    from genaudit.features import FeatureSet
    from genaudit.models import OnnxGraph

NEAR_CHANCE = 0.1  # accuracy below chance + 10% of the way from chance to perfect counts as near chance


def chance_level(labels: np.ndarray) -> float:
    """Accuracy of always answering the most frequent class."""
    return float(np.bincount(labels).max() / len(labels))


def near_chance(accuracy: float, labels: np.ndarray) -> bool:
    """Whether `accuracy` is within NEAR_CHANCE of the chance level (relative to the room above it)."""
    chance = chance_level(labels)
    return accuracy < chance + NEAR_CHANCE * (1 - chance)


def constant_output(predictions: np.ndarray) -> str | None:
    """A warning when every sample gets the same class, else None."""
    if len(predictions) < 2 or np.any(predictions != predictions[0]):
        return None
    return (f"Every input gets the same class ({int(predictions[0])}): the model looks untrained or collapsed, or "
            "it is fed the wrong input (preprocessing, --layout, --channels). The diagnostics mean little for it.")


def preprocessing_advice(accuracy: float, labels: np.ndarray, try_preset: Callable[[str], float | None],
                         presets: list[str], samples: int) -> str | None:
    """A warning when labelled clean accuracy is near chance, naming the presets that do clearly better when
    tried (`try_preset(name)` gives the accuracy with that preset on `samples` samples, None if it does not
    apply to the data or is what was used). None when accuracy is not near chance."""
    if not near_chance(accuracy, labels):
        return None
    message = (f"Clean accuracy {accuracy:.2f} is near chance ({chance_level(labels):.2f}) on labelled training "
               "data: the commonest cause is preprocessing that differs from the model's training.")
    tried = {name: try_preset(name) for name in presets}
    better = sorted(((acc, name) for name, acc in tried.items()
                     if acc is not None and acc >= accuracy + NEAR_CHANCE and not near_chance(acc, labels)),
                    reverse=True)
    if better:
        found = ", ".join(f"--preprocess {name} gives {acc:.2f}" for acc, name in better)
        return f"{message} Tried on {samples} samples: {found}."
    return (f"{message} No preprocessing preset does clearly better on {samples} samples; check --layout, "
            "--channels, the labels and their class order.")


def check_scores(graph: OnnxGraph) -> None:
    """Refuse an output that is an embedding (L2-normalized) rather than class scores."""
    if graph.output_kind == "embedding":
        others = [name for name in graph.output_names if name != graph.output_name]
        choose = (f" The model has other outputs ({', '.join(others)}): pick its class scores with --output."
                  if others else "")
        raise GenauditError(
            f"The model's output '{graph.output_name}' is L2-normalized: an embedding, not one score per class. "
            "genaudit audits classifiers; to audit an embedding model, attach the linear classifier it is used "
            f"with and export the two together.{choose}"
        )


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
