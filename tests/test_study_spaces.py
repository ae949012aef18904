"""The exploratory study zoo/study_spaces.py (docs/validity.md quotes its numbers): the whitened images' invariance
to each image's brightness and contrast (its patch space is genaudit's: tests/test_patches.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

import study_spaces  # noqa: E402


def test_whitened_images_ignore_each_images_brightness_and_contrast():
    """Each image is centred and scaled to unit norm before the PCA, so a * x + b (a > 0, per image) gives the
    same distances between whitened images (the vectors themselves up to the principal axes' signs)."""
    rng = np.random.default_rng(0)
    x = rng.random((60, 48))
    a, b = rng.uniform(0.5, 2.0, (60, 1)), rng.uniform(-1.0, 1.0, (60, 1))

    def distances(v):
        return np.linalg.norm(v[:, None] - v[None], axis=-1)

    same = distances(study_spaces.whitened(a * x + b, components=10))
    assert same == pytest.approx(distances(study_spaces.whitened(x, components=10)), abs=1e-6)
    assert not np.allclose(distances(study_spaces.whitened(x ** 2, components=10)), same)  # other images differ
