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


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F); in [0, 1], 1 = same up to rotation/scale."""
    xc, yc = _centered(x), _centered(y)
    if len(xc) != len(yc):
        raise ValueError("CKA needs the same samples for both representations")
    denom = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(np.linalg.norm(yc.T @ xc) ** 2 / denom) if denom > 0 else float("nan")


def _top_directions(x: np.ndarray, keep: float) -> np.ndarray:
    """Orthonormal basis (N x k) of the directions that explain `keep` of the centered data's variance."""
    u, s, _ = np.linalg.svd(_centered(x), full_matrices=False)
    energy = np.cumsum(s**2) / max(np.sum(s**2), 1e-300)
    k = int(np.searchsorted(energy, keep - 1e-12) + 1)
    return u[:, :k]


def svcca(x: np.ndarray, y: np.ndarray, keep: float = 0.99) -> dict:
    """SVCCA: reduce each representation to the SVD directions holding `keep` of its variance, then the mean
    canonical correlation between the two subspaces (in [0, 1], 1 = same subspace)."""
    ux, uy = _top_directions(x, keep), _top_directions(y, keep)
    rho = np.clip(np.linalg.svd(ux.T @ uy, compute_uv=False), 0.0, 1.0)
    return {"mean": float(rho.mean()), "dims": [int(ux.shape[1]), int(uy.shape[1])]}


DRIFT = Diagnostic(  # compare's drift columns: a checkpoint's features against another's, same samples
    "drift", "pair", lambda pair: {"cka": linear_cka(*pair), "svcca": svcca(*pair)["mean"]},
)

