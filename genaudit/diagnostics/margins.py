"""Normalized first-order margins at the feature layer (Jiang, Krishnan, Mobahi, Bengio, "Predicting the
generalization gap in deep networks with margin distributions", ICLR 2019).

For an affine head z = h @ W + b (h: the flattened features of one sample, W: D x C, column w_c the gradient of
z_c with respect to h), the signed distance of h to the decision boundary between its reference class y and
class j is exactly (z_y - z_j) / ||w_y - w_j|| (the head is linear, so the paper's first-order approximation is
exact at this layer). The margin of sample n is the distance to the nearest such boundary:

    d_n = min_{j != y_n} (z_{n,y} - z_{n,j}) / ||w_y - w_j||        (pairs with w_y = w_j are skipped)

negative when the head does not classify n as y_n. As in the paper it is made scale-free by dividing by the
spread of the features, sqrt of their total variance sqrt(sum_d Var(h_d)) over the audited samples, so the
margins of networks of different scale compare.

The distribution is summarized by the paper's signature, on the logarithm of the positive margins: the
quartiles Q1, Q2, Q3 and the fences Q1 - 1.5 IQR and Q3 + 1.5 IQR (IQR = Q3 - Q1), plus the fraction of
negative margins (misclassified reference samples, which the log cannot take). Larger margins go with better
generalization in the paper, for a fixed training set; the fraction of negative margins is 1 - training
accuracy against the reference (up to ties).
"""

from __future__ import annotations

import numpy as np

from genaudit.registry import Better, Diagnostic, Metric


def sample_margins(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Un-normalized margins d_n (N,) of the affine head z = flatten(features) @ weight + bias; weight is D x C."""
    h = np.asarray(features, np.float64).reshape(len(features), -1)
    w = np.asarray(weight, np.float64)
    z = h @ w + np.asarray(bias, np.float64).reshape(1, -1)
    reference = np.asarray(reference, np.int64).reshape(-1)
    if len(reference) != len(h):
        raise ValueError(f"features has {len(h)} samples but reference has {len(reference)}")
    c = w.shape[1]
    if reference.min(initial=0) < 0 or reference.max(initial=0) >= c:
        raise ValueError(f"reference classes must lie in [0, {c})")
    # ||w_i - w_j|| for every class pair (C x C)
    gram = w.T @ w
    sq = np.diag(gram)
    norms = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0))
    rows = np.arange(len(h))
    gaps = z[rows, reference][:, None] - z  # N x C: z_y - z_j
    denom = norms[reference]  # N x C: ||w_y - w_j||
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(denom > 0, gaps / np.where(denom > 0, denom, 1.0), np.inf)
    d[rows, reference] = np.inf  # j != y
    return d.min(axis=1)


def feature_spread(features: np.ndarray) -> float:
    """sqrt(total variance) of the flattened features: sqrt(sum_d Var(h_d)) (population variances)."""
    h = np.asarray(features, np.float64).reshape(len(features), -1)
    return float(np.sqrt(h.var(axis=0).sum()))


def margins(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, reference: np.ndarray) -> dict:
    """The normalized margin signature of the audited samples.

    Returns {"negative_fraction", "positive_fraction", "log_q1", "log_q2", "log_q3", "log_lower_fence",
    "log_upper_fence", "normalizer" (the feature spread), "samples"}; the log_* entries are quantiles (linear
    interpolation, numpy's default) of ln(d_n / spread) over the samples with d_n > 0, and None when no margin is
    positive or the features do not vary.
    """
    d = sample_margins(features, weight, bias, reference)
    spread = feature_spread(features)
    out = {"negative_fraction": float(np.mean(d < 0)), "positive_fraction": float(np.mean(d > 0)),
           "normalizer": spread, "samples": int(len(d))}
    positive = d[(d > 0) & np.isfinite(d)]
    if spread > 0 and len(positive):
        logs = np.log(positive / spread)
        q1, q2, q3 = np.quantile(logs, [0.25, 0.5, 0.75])
        iqr = q3 - q1
        out.update(log_q1=float(q1), log_q2=float(q2), log_q3=float(q3),
                   log_lower_fence=float(q1 - 1.5 * iqr), log_upper_fence=float(q3 + 1.5 * iqr))
    else:
        out.update({key: None for key in ("log_q1", "log_q2", "log_q3", "log_lower_fence", "log_upper_fence")})
    return out


# ----------------------------------------------------------------------------------------------- registration

DIAGNOSTIC = Diagnostic(
    "margins", "head",
    lambda c: None if c.cut.affine is None else margins(c.fs.features, c.cut.affine.weight, c.cut.affine.bias,
                                                        c.fs.reference),
    (Metric(name="margin", path="margins.log_q2", label="margin (median, log)", group="class structure",
            better=Better.HIGHER, short="median distance to the boundary",
            meaning="median of ln(d_n / spread) over correctly classified samples: distance of the features to the "
                    "nearest decision boundary of the (affine) head, relative to the features' spread",
            formula="d_n = min_{j≠y} (z_y − z_j)/‖w_y − w_j‖; quartiles and fences of ln(d_n / sqrt(Σ Var h))",
            source="Jiang, Krishnan, Mobahi, Bengio 2019, 'Predicting the generalization gap in deep networks with "
                   "margin distributions'",
            reading="Larger margins went with better generalization in the paper for a fixed training set; only for "
                    "heads that are one affine map. See docs/validity.md for how it ranked genaudit's zoos.",
            tag="margin"),),
)

__all__ = ["DIAGNOSTIC", "feature_spread", "margins", "sample_margins"]
