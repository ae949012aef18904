"""Data for an audit: a source (see `sources`), a seeded stratified subsample, and preprocessing per batch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, TypeVar

import numpy as np

from genaudit.data.sources import load_source
from genaudit.errors import GenauditError
from genaudit.files import data_cache_dir
from genaudit.memo import Memo

T = TypeVar("T")

# name -> (scale, mean, std); scale None = x/255 for uint8 data (as stored for float data)
PRESETS: dict[str, tuple[float | None, tuple[float, ...], tuple[float, ...]]] = {
    "unit": (None, (0.0,), (1.0,)),                                    # [0, 1]
    "raw": (1.0, (0.0,), (1.0,)),                                      # pixel values as stored (0..255)
    "center": (None, (0.5,), (0.5,)),                                  # [-1, 1]
    "mnist": (None, (0.1307,), (0.3081,)),
    "cifar10": (None, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": (None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class Preprocess:
    """How raw images become model inputs: x*scale (default x/255 for uint8 data), channels, resize, then
    (x-mean)/std. `preset` names where scale/mean/std came from (see PRESETS), for the record."""

    channels: int | None = None              # convert to 1 (grayscale) or 3 (RGB); None keeps the data's
    resize: tuple[int, int] | None = None    # (H, W); None keeps the data's size
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float | None = None               # None: 1/255 for uint8 data, 1 for float data
    preset: str | None = None

    @classmethod
    def from_preset(cls, preset: str | None = None, *, channels: int | None = None,
                    resize: tuple[int, int] | None = None, mean: tuple[float, ...] | None = None,
                    std: tuple[float, ...] | None = None, scale: float | None = None) -> "Preprocess":
        """A preset's scale/mean/std (default 'unit'), each overridden by an explicit value."""
        if preset is not None and preset not in PRESETS:
            raise GenauditError(f"--preprocess must be one of {', '.join(PRESETS)} (got '{preset}').")
        p_scale, p_mean, p_std = PRESETS[preset or "unit"]
        return cls(channels=channels, resize=resize, mean=mean or p_mean, std=std or p_std,
                   scale=p_scale if scale is None else scale, preset=preset)

    def describe(self, dtype: np.dtype | None = None) -> dict:
        """The preprocessing as recorded in the scorecard (the scale actually applied to data of `dtype`)."""
        scale = self.scale if self.scale is not None else (1 / 255 if dtype == np.uint8 else 1.0)
        return {**asdict(self), "scale": scale}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.scale is not None:
            x = x.astype(np.float32) * np.float32(self.scale)
        else:
            x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        if x.ndim == 4:
            if self.channels == 3 and x.shape[1] == 1:
                x = np.repeat(x, 3, axis=1)
            elif self.channels == 1 and x.shape[1] == 3:
                x = np.tensordot(x, np.array([0.299, 0.587, 0.114], np.float32), axes=([1], [0]))[:, None]
            if self.resize is not None and tuple(x.shape[2:]) != tuple(self.resize):
                from genaudit.models.torch_formats import require

                torch = require("torch", "--resize", ", or resize the images beforehand")
                import torch.nn.functional as nnf

                x = nnf.interpolate(torch.from_numpy(x), size=self.resize, mode="bilinear", antialias=True,
                                    align_corners=False).numpy()
            shape = (1, -1, 1, 1)
        else:
            shape = (1, -1)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return (x - mean) / std

    def fits(self, raw_channels: int | None) -> bool:
        """Whether mean/std give one value or one per channel of the (converted) images."""
        target = self.channels or raw_channels
        return all(len(values) in (1, target) for values in (self.mean, self.std))

    def validate(self, raw_channels: int | None) -> None:
        if not self.fits(raw_channels):
            target = self.channels or raw_channels
            where = f"preset '{self.preset}'" if self.preset else "--mean/--std"
            raise GenauditError(
                f"The {where} normalization has {max(len(self.mean), len(self.std))} values, but the images have "
                f"{target} channel(s). Give 1 value or one per channel, or convert the images with --channels."
            )
        if any(s == 0 for s in self.std):
            raise GenauditError("--std must not contain 0.")
        if self.scale is not None and not self.scale > 0:
            raise GenauditError(f"--scale must be a positive number (got {self.scale}).")


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
    ids: list | None = None  # each sample's place in the source: its row (npz, named set) or file (folder)
    # what audits compute from these samples alone (no model), kept for the next audit of the same Dataset object
    # in this process (`compare`, `watch`: every checkpoint on the same samples): see `derived_from`
    derived: Memo = field(default_factory=Memo, repr=False, compare=False)

    def derived_from(self, key: Hashable, make: Callable[[], T]) -> T:
        """The value `make()` computes from these samples alone (never from a model), made once per key (also
        when threads ask for it at once)."""
        return self.derived.get(key, make)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple:
        """Per-sample shape after preprocessing (before any flattening for a flat model)."""
        return tuple(self.preprocess(self.x[:1]).shape[1:])

    def batches(self, size: int, layout: str = "nchw", indices: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Preprocessed batches of the samples (or of `indices`), arranged in the model's input `layout`."""
        x = self.x if indices is None else self.x[indices]
        for start in range(0, len(x), size):
            yield arrange(self.preprocess(x[start : start + size]), layout)


def arrange(x: np.ndarray, layout: str) -> np.ndarray:
    """A batch of preprocessed samples (N,C,H,W or N,D) in a model's input layout: 'nchw' as is, 'nhwc'
    channels-last, 'flat' one vector per sample."""
    if layout == "flat":
        return x.reshape(len(x), -1)
    if layout == "nhwc" and x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def load_data(
    spec: Any,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    samples: int | None = 2000,
    seed: int = 0,
    preprocess: Preprocess = Preprocess(),
    train_size: int | None = None,
) -> Dataset:
    """Load `spec` ('sample', a named set, .npz, image folder, or arrays `(x, y)` / `{"x", "y"}`), subsample
    it, attach preprocessing. `train_size`: how many images the model trained on (default: all of `spec`)."""
    if samples is not None and samples < 1:
        raise GenauditError(f"--samples must be at least 1 (got {samples}).")
    root = Path(data_dir) if data_dir else data_cache_dir()
    x, y = load_source(spec, split, root, preprocess.resize)
    if len(x) == 0:
        raise GenauditError(f"Data '{spec}' holds no samples. Point --data at a data set with images in it.")
    preprocess.validate(x.shape[1] if x.ndim == 4 else None)
    idx = stratified_indices(len(x), y, samples, seed)
    description = {"spec": str(spec) if isinstance(spec, (str, Path)) else "arrays", "split": split,
                   "source_size": int(len(x)), "train_size": int(train_size or len(x)),
                   "train_size_given": train_size is not None,
                   "samples": int(len(idx)),
                   "labels": y is not None, "preprocess": preprocess.describe(x.dtype)}
    ids = [x.files[i] for i in idx] if hasattr(x, "files") else [int(i) for i in idx]
    return Dataset(x[idx], None if y is None else y[idx], preprocess, description, ids)


__all__ = ["PRESETS", "Dataset", "Preprocess", "arrange", "load_data", "stratified_indices"]
