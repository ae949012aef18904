"""Representation similarity between two models' features on the same samples (e.g. two checkpoints).

Linear CKA (Kornblith et al. 2019) and SVCCA (Raghu et al. 2017, used by AL2 between training epochs): both are
1 for representations that are the same up to rotation and scale, and fall towards 0 as they diverge. Between
consecutive checkpoints, a drop means the representation is still being reorganised; late in training a
memorizing network keeps changing while a converged one stays put.
"""

from __future__ import annotations

import numpy as np

from genaudit.registry import Diagnostic


def _centered(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x - x.mean(axis=0, keepdims=True)


class Representation:
    """One model's features on the samples, prepared once for every comparison it takes part in: centered,
    the Frobenius norm of its Gram matrix (CKA), and the directions holding 99% of its variance (SVCCA)."""

    def __init__(self, x: np.ndarray, keep: float = 0.99):
        self.centered = _centered(x)
        self.gram_norm = float(np.linalg.norm(self.centered.T @ self.centered))
        self.directions = _top_directions(self.centered, keep)


def _prepared(x) -> Representation:
    return x if isinstance(x, Representation) else Representation(x)


def linear_cka(x, y) -> float:
    """Linear CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F); in [0, 1], 1 = same up to rotation/scale.
    `x`, `y`: feature arrays on the same samples, or their Representations."""
    a, b = _prepared(x), _prepared(y)
    if len(a.centered) != len(b.centered):
        raise ValueError("CKA needs the same samples for both representations")
    denom = a.gram_norm * b.gram_norm
    return float(np.linalg.norm(b.centered.T @ a.centered) ** 2 / denom) if denom > 0 else float("nan")


def _top_directions(xc: np.ndarray, keep: float) -> np.ndarray:
    """Orthonormal basis (N x k) of the directions that explain `keep` of the centered data's variance."""
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    energy = np.cumsum(s**2) / max(np.sum(s**2), 1e-300)
    k = int(np.searchsorted(energy, keep - 1e-12) + 1)
    return u[:, :k]


def svcca(x, y, keep: float = 0.99) -> dict:
    """SVCCA: reduce each representation to the SVD directions holding `keep` of its variance, then the mean
    canonical correlation between the two subspaces (in [0, 1], 1 = same subspace). `x`, `y`: feature arrays
    or Representations (prepared with the default keep)."""
    ux = x.directions if isinstance(x, Representation) else _top_directions(_centered(x), keep)
    uy = y.directions if isinstance(y, Representation) else _top_directions(_centered(y), keep)
    rho = np.clip(np.linalg.svd(ux.T @ uy, compute_uv=False), 0.0, 1.0)
    return {"mean": float(rho.mean()), "dims": [int(ux.shape[1]), int(uy.shape[1])]}


DRIFT = Diagnostic(  # compare's drift columns: two checkpoints' features (or Representations), same samples
    "drift", "pair", lambda pair: {"cka": linear_cka(*pair), "svcca": svcca(*pair)["mean"]},
)
