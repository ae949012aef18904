"""Input-space probes: how the whole model's predictions hold up around the training points.

The layer diagnostics look at one representation; predictors of generalization from the PGDL competition
(e.g. Natekar & Sharma's augmentation margins) found strong signal in the *whole* model's response to small
input changes. These rerun the full network, so they run on a bounded subsample. Both report agreement with
the model's clean predictions (label-free by nature): higher = more stable = generalizes better.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from genaudit.data import arrange, stratified_indices
from genaudit.diagnostics._head import normalized_auc
from genaudit.registry import Better, Context, Diagnostic, Metric

Predict = Callable[[np.ndarray], np.ndarray]  # preprocessed images (N, C, H, W) or (N, D) -> logits


def input_noise_agreement(predict: Predict, x: np.ndarray, *, levels: int = 6, max_scale: float = 0.5,
                          seed: int = 0) -> dict:
    """Agreement with clean predictions under Gaussian input noise of std s * std(x), s = 0..max_scale.

    auc: area under agreement(s) over [0, max_scale], normalized to [0, 1]; higher = more stable.
    """
    clean = predict(x).argmax(axis=1)
    direction = float(x.std()) * np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    scales = np.linspace(0.0, max_scale, levels)
    agreement = np.array([np.mean(predict(x + np.float32(s) * direction).argmax(axis=1) == clean)
                          for s in scales])
    return {"auc": normalized_auc(scales, agreement),
            "curve": {"scale": scales.tolist(), "agreement": agreement.tolist()}, "samples": int(len(x))}


def augmentations(x: np.ndarray) -> dict[str, np.ndarray]:
    """Mild label-preserving image changes: 2-pixel shifts in four directions and +/-10 degree rotations."""
    from scipy import ndimage  # only the probes need it

    out = {}
    for name, (dy, dx) in {"shift up": (-2, 0), "shift down": (2, 0), "shift left": (0, -2),
                           "shift right": (0, 2)}.items():
        out[name] = ndimage.shift(x, (0, 0, dy, dx), order=0, mode="nearest")
    for angle in (-10, 10):
        out[f"rotate {angle:+d}°"] = ndimage.rotate(x, angle, axes=(2, 3), reshape=False, order=1, mode="nearest")
    return out


def augmentation_agreement(predict: Predict, images: np.ndarray) -> dict:
    """Fraction of samples whose prediction is unchanged by each mild augmentation, and their mean.

    `images` must be (N, C, H, W); `predict` takes images of that shape. Higher = more stable.
    """
    clean = predict(images).argmax(axis=1)
    per = {name: float(np.mean(predict(aug.astype(np.float32)).argmax(axis=1) == clean))
           for name, aug in augmentations(images).items()}
    return {"mean": float(np.mean(list(per.values()))), "per_augmentation": per, "samples": int(len(images))}


def probe_set(c: Context) -> tuple[Predict, np.ndarray]:
    """The whole model's predict function and the seeded stratified subsample of `--probes` images the
    input-space probes share (made once per audit)."""
    def make() -> tuple[Predict, np.ndarray]:
        idx = stratified_indices(len(c.dataset), c.fs.reference, c.opts.probes, c.opts.seed)
        images = np.concatenate(list(c.dataset.batches(len(idx), indices=idx)))
        size = c.opts.batch_size

        def predict(x: np.ndarray) -> np.ndarray:
            return np.concatenate([c.cut.predict(arrange(x[i : i + size], c.layout)) for i in range(0, len(x), size)])

        return predict, images

    return c.shared("probes", make)


def _probes_on(opts) -> bool:
    return opts.probes > 0


INPUT_NOISE = Diagnostic(
    "input.noise", "input", lambda c: input_noise_agreement(*probe_set(c), seed=c.opts.seed),
    (Metric(name="input_noise", path="input.noise.auc", label="input-noise agreement AUC", group="input-space",
            better=Better.HIGHER, short="predictions kept under input noise",
            meaning="prediction agreement with the clean model as Gaussian input noise grows to 0.5 σ_x, area",
            formula="(1/s_max) ∫ agree(s) ds, x + N(0, (s σ_x)²)",
            source="PGDL predictors (agreement under perturbation)",
            reading="Reruns the whole model on a subsample. Lower = predictions flip under small input noise."),),
    enabled=_probes_on,
)
AUGMENTATION = Diagnostic(
    "input.augmentation", "input",
    lambda c: augmentation_agreement(*probe_set(c)) if probe_set(c)[1].ndim == 4 else None,
    (Metric(name="augmentation", path="input.augmentation.mean", label="augmentation agreement", group="input-space",
            better=Better.HIGHER, short="kept under shifts and rotations",
            meaning="share of predictions unchanged by 2-pixel shifts and ±10° rotations",
            formula="mean over augmentations of mean(pred(aug(x)) == pred(x))",
            source="Natekar & Sharma (PGDL 2020): augmentation-based margins",
            reading="Reruns the whole model on a subsample. Lower = the model is unstable around its training "
                    "points."),),
    enabled=_probes_on,
)

