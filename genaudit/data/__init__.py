"""Data for an audit: a source (see `sources`), a seeded stratified subsample, and preprocessing per batch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from genaudit.data.sources import default_data_dir, load_source
from genaudit.errors import GenauditError


@dataclass(frozen=True)
class Preprocess:
    """How raw images become model inputs: scale to [0,1] (uint8 data), channels, resize, then (x-mean)/std."""

    channels: int | None = None              # convert to 1 (grayscale) or 3 (RGB); None keeps the data's
    resize: tuple[int, int] | None = None    # (H, W); None keeps the data's size
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def describe(self) -> dict:
        return {**asdict(self), "scale": "x/255 for uint8 data, else as stored"}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        if x.ndim == 4:
            if self.channels == 3 and x.shape[1] == 1:
                x = np.repeat(x, 3, axis=1)
            elif self.channels == 1 and x.shape[1] == 3:
                x = np.tensordot(x, np.array([0.299, 0.587, 0.114], np.float32), axes=([1], [0]))[:, None]
            if self.resize is not None and tuple(x.shape[2:]) != tuple(self.resize):
                import torch
                import torch.nn.functional as nnf

                x = nnf.interpolate(torch.from_numpy(x), size=self.resize, mode="bilinear", antialias=True,
                                    align_corners=False).numpy()
            shape = (1, -1, 1, 1)
        else:
            shape = (1, -1)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return (x - mean) / std

    def validate(self, raw_channels: int | None) -> None:
        for name, values in (("mean", self.mean), ("std", self.std)):
            target = self.channels or raw_channels
            if len(values) not in (1, target):
                raise GenauditError(f"--{name} has {len(values)} values; give 1 or one per channel ({target}).")
        if any(s == 0 for s in self.std):
            raise GenauditError("--std must not contain 0.")


def stratified_indices(n: int, labels: np.ndarray | None, samples: int | None, seed: int) -> np.ndarray:
    """A seeded subsample of `samples` indices, proportional per class when labels exist, in ascending order."""
    if samples is None or samples >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, size=samples, replace=False))
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / n * samples).astype(int)
    # hand out what rounding left over to the classes with the largest remainders (ties: lower class first)
    remainder = counts / n * samples - quota
    for i in np.argsort(-remainder, kind="stable")[: samples - quota.sum()]:
        quota[i] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


@dataclass
class Dataset:
    """Raw inputs and optional labels for the chosen samples, preprocessed batch by batch on the way out."""

    x: np.ndarray
    y: np.ndarray | None
    preprocess: Preprocess
    spec: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple:
        """Per-sample shape after preprocessing (before any flattening for a flat model)."""
        return tuple(self.preprocess(self.x[:1]).shape[1:])

    def batches(self, size: int, flatten: bool = False, indices: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Preprocessed batches of the samples (or of `indices`), flattened to vectors for a flat model."""
        x = self.x if indices is None else self.x[indices]
        for start in range(0, len(x), size):
            batch = self.preprocess(x[start : start + size])
            yield batch.reshape(len(batch), -1) if flatten else batch


def load_data(
    spec: str,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    samples: int | None = 2000,
    seed: int = 0,
    preprocess: Preprocess = Preprocess(),
) -> Dataset:
    """Load `spec` ('sample', a named set, .npz or image folder), subsample it, attach preprocessing."""
    if samples is not None and samples < 1:
        raise GenauditError(f"--samples must be at least 1 (got {samples}).")
    root = Path(data_dir) if data_dir else default_data_dir()
    x, y = load_source(spec, split, root)
    if len(x) == 0:
        raise GenauditError(f"Data '{spec}' holds no samples. Point --data at a data set with images in it.")
    preprocess.validate(x.shape[1] if x.ndim == 4 else None)
    idx = stratified_indices(len(x), y, samples, seed)
    description = {"spec": spec, "split": split, "source_size": int(len(x)), "samples": int(len(idx)),
                   "labels": y is not None, "preprocess": preprocess.describe()}
    return Dataset(x[idx], None if y is None else y[idx], preprocess, description)


__all__ = ["Dataset", "Preprocess", "load_data", "stratified_indices"]
