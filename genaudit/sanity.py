"""Sanity checks on a model's outputs: refusals of outputs that are not class scores, and warnings that the
audit may be measuring the wrong thing.

A model that gives every input the same class is untrained, collapsed, or fed the wrong input; a model whose
clean accuracy on its own training data is near chance, far below what its training samples' neighbours vote or
far below its own confidence, is most often preprocessed differently from how it was trained. Both make every
diagnostic meaningless, so the report says so first.
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


def below_vote(accuracy: float, vote: float | None, labels: np.ndarray) -> bool:
    """Whether labelled clean accuracy lies more than NEAR_CHANCE of the room above chance below `vote`, how often
    the labels agree with their neighbours' vote (model-free). A model fits its own training data at least about
    as well as a nearest-neighbour vote among the audited samples; far below it is fed differently from how it
    was trained, or barely trained."""
    return vote is not None and accuracy < vote - NEAR_CHANCE * (1 - chance_level(labels))


OVERCONFIDENT = 0.2  # mean confidence above labelled clean accuracy by more than this


def overconfident(accuracy: float, confidence: float | None) -> bool:
    """Whether the model's mean confidence (its probability of the class it predicts) exceeds its labelled clean
    accuracy by more than OVERCONFIDENT. On its own training images a model is about as confident as it is right,
    or less (trained with augmentation: a CIFAR-10 CNN 0.65 confident, 0.72 right); fed inputs unlike its training
    data it often stays confident and is wrong (the same CNN on mean/std-normalized inputs: 0.87 and 0.25). Labels
    it does not fit (label noise) also open this gap, so it only decides whether presets are tried."""
    return confidence is not None and confidence - accuracy > OVERCONFIDENT


def preprocessing_advice(accuracy: float, labels: np.ndarray, try_preset: Callable[[str], float | None],
                         presets: list[str], samples: int, vote: float | None = None,
                         confidence: float | None = None) -> str | None:
    """A warning when labelled clean accuracy is near chance, far below the neighbour vote's agreement with the
    labels (`vote`, see below_vote) or far below the model's mean confidence (see overconfident), naming the
    presets that do clearly better when tried (`try_preset(name)` gives the accuracy with that preset on `samples`
    samples, None if it does not apply to the data or is what was used) and reach the vote's level when it is
    known. None when accuracy is none of these; when it is not near chance, None also when no preset does better
    (the model may be barely trained, or its labels noisy)."""
    chance = near_chance(accuracy, labels)
    if chance:
        where = f"near chance ({chance_level(labels):.2f})"
    elif below_vote(accuracy, vote, labels):
        where = f"far below how often the labels agree with their neighbours' vote ({vote:.2f})"
    elif overconfident(accuracy, confidence):
        where = f"far below the model's confidence in its own predictions ({confidence:.2f} on average)"
    else:
        return None
    message = (f"Clean accuracy {accuracy:.2f} is {where} on labelled training data: the commonest cause is "
               "preprocessing that differs from the model's training.")
    tried = {name: try_preset(name) for name in presets}
    # A preset counts only if it also lifts accuracy to the vote's level: another scale can lift a barely trained
    # model a little (an MNIST CNN after one epoch: 0.50 -> 0.68, its neighbours' vote 0.92).
    better = sorted(((acc, name) for name, acc in tried.items()
                     if acc is not None and acc >= accuracy + NEAR_CHANCE and not near_chance(acc, labels)
                     and not below_vote(acc, vote, labels)),
                    reverse=True)
    if better:
        found = ", ".join(f"--preprocess {name} gives {acc:.2f}" for acc, name in better)
        return f"{message} Tried on {samples} samples: {found}."
    if not chance:
        return None
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
    """Refuse outputs that are not class scores or not finite, labels outside the model's classes, and too
    few samples (see check_sample_size)."""
    if fs.logits.shape[1] < 2:
        raise GenauditError(
            f"The model outputs {fs.logits.shape[1]} value per sample; genaudit audits classifiers whose output "
            "has one score per class (at least 2). Regression and embedding models are not supported."
        )
    check_finite_outputs(fs.logits, fs.features)
    if labels is not None and (labels.min() < 0 or labels.max() >= fs.logits.shape[1]):
        raise GenauditError(
            f"The data's labels run from {labels.min()} to {labels.max()}, but the model has "
            f"{fs.logits.shape[1]} classes (0..{fs.logits.shape[1] - 1}). Use data with the model's classes, "
            "or --no-labels to audit against the model's own predictions. If the model has several outputs, the "
            "class scores may be in another one: `genaudit layers MODEL` lists them, --output picks one."
        )
    check_sample_size(fs.reference, labels is not None)


def _non_finite_rows(values: np.ndarray) -> np.ndarray:
    """Which samples (rows) hold a NaN or an infinity."""
    return ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)


def check_finite_outputs(logits: np.ndarray, features: np.ndarray | None = None) -> None:
    """Refuse model outputs (or feature-layer values) that are NaN or infinite on (finite) data: the class
    scores, and every diagnostic built on them, would be meaningless."""
    for what, values in (("output (class scores)", logits), ("feature layer", features)):
        if values is None or not len(values):
            continue
        bad = _non_finite_rows(np.asarray(values))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise GenauditError(
                f"The model's {what} holds NaN or infinite values for {int(bad.sum())} of {len(bad)} audited "
                f"samples (the first is sample {first}), although the inputs are finite. The model's weights "
                "probably hold NaN or inf (training diverged: audit an earlier checkpoint), or the inputs are far "
                "outside the range it was trained on (check --preprocess, --scale, --mean/--std)."
            )


MIN_SAMPLES_PER_CLASS = 2  # on average over the classes present in the reference: below it, nothing is measured


def check_sample_size(reference: np.ndarray, labels_used: bool = True) -> None:
    """Refuse an audit of fewer than MIN_SAMPLES_PER_CLASS samples per class on average (and so fewer than 2
    samples): class-conditional measures (intra-class variance, consistency, neighbour votes, selectivity)
    need at least two samples of a class. `reference` holds the class of every audited sample: its labels, or
    (`labels_used` False) the model's predicted classes."""
    n = len(reference)
    classes = len(np.unique(reference)) if n else 0
    if n >= max(MIN_SAMPLES_PER_CLASS, MIN_SAMPLES_PER_CLASS * classes):
        return
    what = "labelled classes" if labels_used else "predicted classes (--no-labels)"
    raise GenauditError(
        f"Too few samples to audit: {n} sample{'s' if n != 1 else ''} over {classes} {what}. genaudit needs at "
        f"least {MIN_SAMPLES_PER_CLASS} samples per class on average (here at least "
        f"{max(MIN_SAMPLES_PER_CLASS, MIN_SAMPLES_PER_CLASS * classes)}), and gives usable numbers from about "
        f"{SMALL_SAMPLES} on. Use more data, or a larger --samples (default 2000)."
    )


SMALL_SAMPLES = 100  # fewer audited samples than this (or 5 per class on average): the report warns


def small_sample_warning(n_samples: int, n_classes: int) -> str | None:
    """A warning for the scorecard when the audit ran on few samples (fewer than SMALL_SAMPLES, or fewer than 5
    per class on average): every measure is noisy and the estimate's interval is wide. None otherwise."""
    per_class = n_samples / max(n_classes, 1)
    if n_samples >= SMALL_SAMPLES and per_class >= 5:
        return None
    return (f"Only {n_samples} samples were audited ({per_class:.1f} per class on average over {n_classes} "
            f"classes): every measure is noisy and the estimate's interval is wide. Audit at least {SMALL_SAMPLES} "
            "samples and 5 per class (1,000 or more gives steady numbers): use more data or a larger --samples.")


def output_advice(graph: OnnxGraph, accuracy: float | None, labels: np.ndarray | None) -> str | None:
    """A warning when the model has several outputs and labelled clean accuracy on the audited one is near
    chance: the class scores may be in another output. Lists every output with its size and names --output."""
    names = graph.output_names
    if len(names) < 2 or accuracy is None or labels is None or not near_chance(accuracy, labels):
        return None
    return (f"Clean accuracy {accuracy:.2f} on output '{graph.output_name}' is near chance "
            f"({chance_level(labels):.2f}), and the model has {len(names)} outputs: "
            f"{describe_outputs(names, graph.output_sizes(), graph.output_index)}. If the class scores are in "
            "another output, pick it with --output NAME (or its index).")


def describe_outputs(output_names: list[str], classes: list[int | None], chosen: int | None = None) -> str:
    """'0: 'aux' (3 classes, audited), 1: 'logits' (10 classes)' for messages."""
    return ", ".join(
        f"{i}: '{name}' ({'?' if size is None else size} {'class' if size == 1 else 'classes'}"
        f"{', audited' if i == chosen else ''})" for i, (name, size) in enumerate(zip(output_names, classes)))
