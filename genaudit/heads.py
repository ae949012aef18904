"""Heads: what maps a layer's features to the model's outputs. A head is any callable features -> outputs;
`AffineHead` is the common case (the classifier itself) that diagnostics evaluate in closed form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Head = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class AffineHead:
    """outputs = flatten(features) @ weight + bias, up to ops that keep each row's argmax (e.g. softmax)."""

    weight: np.ndarray  # D x C, float64
    bias: np.ndarray    # C

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return features.reshape(len(features), -1) @ self.weight + self.bias
