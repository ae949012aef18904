"""The one trunk pass: features of the chosen layer, clean outputs and predictions for every sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from genaudit.errors import GenauditError
from genaudit.registry import Metric


@dataclass
class FeatureSet:
    """Features F (N x units [x H x W]) of one layer with the clean predictions and the reference labels.

    `reference` is what accuracy is measured against: the true labels when given, otherwise the model's own
    clean predictions (so accuracy means agreement with the unmodified model).
    """

    features: np.ndarray
    logits: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray | None

    @property
    def labels_used(self) -> bool:
        return self.labels is not None

    def without_labels(self) -> FeatureSet:
        """The same features with the model's own predictions as the reference (label-free)."""
        return FeatureSet(self.features, self.logits, self.predictions, None)

    @property
    def reference(self) -> np.ndarray:
        return self.labels if self.labels_used else self.predictions

    @property
    def units(self) -> int:
        return self.features.shape[1]

    @property
    def clean_accuracy(self) -> float | None:
        """Fraction of samples the unmodified model classifies correctly (None without labels)."""
        return None if self.labels is None else float(np.mean(self.predictions == self.labels))

    def unit_values(self) -> np.ndarray:
        """One value per sample and unit (N x D): conv feature maps are averaged over space."""
        return unit_values(self.features)


def unit_values(features: np.ndarray) -> np.ndarray:
    """Per sample and unit (N x D): vectors as they are, conv maps (N x C x H x W) averaged over space."""
    f = features
    return f.reshape(f.shape[0], f.shape[1], -1).mean(axis=2) if f.ndim > 2 else f


def share_error(share: float | None, n: int) -> float | None:
    """Sampling standard error of a share of n samples (an accuracy, an agreement): sqrt(p (1 - p) / n)."""
    return None if share is None or n < 1 else float(np.sqrt(max(share * (1 - share), 0.0) / n))


def flat_pooled(x: np.ndarray, max_dims: int) -> np.ndarray:
    """Samples as float32 vectors of at most `max_dims` values: image-like arrays (N, C, H, W) larger than that
    are average-pooled over square spatial blocks first (the bottom/right rows that do not fill a block are
    dropped), so distances between samples stay meaningful and bounded in memory. Smaller arrays are only
    flattened."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and x[0].size > max_dims:
        c, h, w = x.shape[1:]
        f = max(2, int(np.sqrt(x[0].size / max_dims)))  # the smallest block that fits, from below
        while c * (h // f) * (w // f) > max_dims:
            f += 1
        h2, w2 = h // f, w // f
        x = x[:, :, : h2 * f, : w2 * f].reshape(len(x), c, h2, f, w2, f).mean(axis=(3, 5))
    return x.reshape(len(x), -1)


def compute_features(
    trunk: Callable[[np.ndarray], list[np.ndarray]],
    batches,
    labels: np.ndarray | None,
    progress: Callable[[int], None] | None = None,
    extra: Callable[[list[np.ndarray]], None] | None = None,
) -> FeatureSet:
    """Run the trunk once over all batches, keeping features and clean outputs. Without labels, the model's
    own clean predictions become the reference. The trunk returns [features, outputs, *extra layers]; extra
    layers are handed to `extra` batch by batch (reduced on the fly, never all kept)."""
    feats, outs = [], []
    for batch in batches:
        f, o, *rest = trunk(batch)
        if not outs and sum(d > 1 for d in np.shape(o)[1:]) > 1:
            raise GenauditError(
                f"The model's output has shape {list(np.shape(o)[1:])} per sample: scores per position (e.g. "
                "segmentation or detection), not one score per class. genaudit audits classifiers; if the model "
                "has a class-score output too, choose it with --output."
            )
        feats.append(np.asarray(f, np.float32))
        outs.append(np.asarray(o, np.float32))
        if extra is not None:
            extra(rest)
        if progress is not None:
            progress(len(batch))
    features = np.concatenate(feats)
    logits = np.concatenate(outs).reshape(len(features), -1)
    return FeatureSet(features, logits, logits.argmax(axis=1), labels)


CLEAN_ACCURACY = Metric("clean_accuracy", "clean_accuracy", "clean accuracy", "accuracy", "higher",
                        "accuracy on the audited samples",
                        "fraction of the audited (training) samples classified correctly",
                        "mean(argmax ψ(F) == y)", "—",
                        "Training accuracy, not test accuracy. Near chance (1/classes) usually means wrong "
                        "preprocessing.", tag="train acc")

