"""Which training samples did the model memorize? A per-sample suspicion score from the trained model and its
training data alone (no retraining), and the memorization summary of the scorecard.

For each audited sample n with given label y_n, its 10 nearest audited neighbours (leave-one-out, Euclidean, as
the neighbour votes of `genaudit.diagnostics.neighbours`) are found in the input space, in the patch space built
from the audited images alone (`genaudit.patches`; images only), in the model's early layer (its first
activation) and in its feature layer; D_space(n) = how many of them have another given label than y_n. A wrong
or atypical label is outvoted by its neighbours; a model that nevertheless predicts it has memorized it.

    suspicion(n) = Σ_spaces D_space / (10 × spaces)     (D = disagreeing neighbours of 10; in [0, 1])

over the spaces the audit has (all four for images; the patch space joined in genaudit 0.5.0, chosen by the
study's rule: AUROC 0.969 → 0.977 on MNIST, 0.938 → 0.953 on Fashion-MNIST, 0.81 / 0.76 / 0.68 → 0.84 / 0.78 /
0.71 on CIFAR-10 at 20 / 40 / 60% wrong labels). `suggested` is the neighbours' vote in input space (the label
the neighbourhood suggests). The study behind the choice of spaces and its AUROC against cleanlab's
self-confidence is docs/suspects.md. Where the neighbours are weak judges (`judges`, `weak`: natural images,
heavy label noise), the suspicion also reads the model's doubt of each label on shifted images (`with_shifts`;
for a run's checkpoints, the last one's, beside the run's doubt: `across_checkpoints`).
"""

from __future__ import annotations

import numpy as np

from genaudit.diagnostics.neighbours import K, neighbour_agreement, neighbours_in, voters
from genaudit.registry import Better, Context, Diagnostic, Metric

THRESHOLD = 0.5  # suspicion above this: the neighbours outvote the given label
RELIABLE = 0.5  # the judges' vote consistency below which the share above overstates (heavy label noise, natural
#                 images): the estimator's threshold for an unreliable neighbour reference (docs/validity.md)
SPACES = ("input", "patches", "early", "features")  # where the neighbours that judge a label are found
#                                                    (docs/suspects.md)

# The memorized share: a sample is flagged when p_wrong > 0.5, a logistic model of its label being wrong fitted on
# the MNIST label-noise models only (docs/suspects.md; out of data set on Fashion-MNIST: MAE 0.041 of the share).
P_WRONG = {"d_input": 10.2556, "d_early": 5.1696, "d_features": 0.7675, "doubt": -0.2603, "bias": -12.3753}


def disagreement(indices: np.ndarray, labels: np.ndarray, k: int = K) -> np.ndarray:
    """For each sample, how many of its first k neighbours (rows of `indices`) have another label than its own."""
    labels = np.asarray(labels).reshape(-1)
    return np.sum(labels[indices[:, :k]] != labels[:, None], axis=1)


def signals(c: Context, every: bool = False) -> dict[str, np.ndarray]:
    """The per-sample disagreement counts D_<space> (0..K) for every space the audit has, for the voters of the
    neighbour votes (`every`: for every audited sample, in audited order)."""
    reference = c.fs.reference[voters(c, every)]
    out = {}
    for space in SPACES:
        found = neighbours_in(c, space, every)
        if found is not None:
            out[f"d_{space}"] = disagreement(found[0], reference)
    return out


def suspicion(counts: dict[str, np.ndarray]) -> np.ndarray:
    """(Σ_spaces D_space) / (K × spaces): integer counts summed first, so equal scores are exactly equal."""
    return np.sum(np.stack(list(counts.values())), axis=0) / (K * len(counts))


def across_checkpoints(suspicions: list[np.ndarray], confidences: list[np.ndarray],
                       shifted_doubt: np.ndarray | None = None) -> np.ndarray:
    """A sample's suspicion from several checkpoints of one training run, all audited on the same samples:

        suspicion_run(n) = (mean_c suspicion_c(n) + mean_c (1 - conf_c(n))) / 2      (in [0, 1]; higher = more
                                                                                      likely a wrong label)

    with conf_c(n) the checkpoint's probability of the given label. The neighbours judge the label as in one
    model; the checkpoints' doubt adds what training did to it: a network fits the clean labels first and the
    wrong ones late, so a wrong label is doubted over most of the run even when the last checkpoint fits it (after
    Pleiss et al. 2020, "Identifying mislabeled data using the area under the margin ranking"). Chosen by the
    suspects study's rule on MNIST runs of 6 checkpoints (docs/suspects.md); the order of the checkpoints does
    not matter. Given the last checkpoint's `shifted_doubt` (see `with_shifts`; read where the neighbours are weak
    judges), it joins as a third term: (mean_c suspicion_c + mean_c (1 - conf_c) + shifted_doubt) / 3 (chosen by
    the study's stage 3, zoo/study_suspects_views.py). A single model's suspicion has no doubt of the image
    itself: at the end of training a memorized label is not doubted there (it may be on shifted images)."""
    if not suspicions or len(suspicions) != len(confidences):
        raise ValueError("one suspicion and one confidence per checkpoint, at least one checkpoint")
    terms = [np.mean(np.stack(suspicions), axis=0), 1.0 - np.mean(np.stack(confidences), axis=0)]
    if shifted_doubt is not None:
        terms.append(np.asarray(shifted_doubt))
    return np.sum(terms, axis=0) / len(terms)


def given_label_confidence(c: Context, chosen: np.ndarray) -> np.ndarray:
    """The model's probability of each sample's given label (softmax of logits; as output for probabilities)."""
    kind = c.cut.output_kind if c.cut is not None else "logits"
    return given_probability(c.fs.logits[chosen], c.fs.labels[chosen], kind)


def given_probability(outputs: np.ndarray, labels: np.ndarray, kind: str = "logits") -> np.ndarray:
    """The probability of each row's label in `labels` from the model's `outputs` (N x classes): their softmax
    for logits and log-probabilities, as they are for `kind` "probabilities"."""
    scores = np.asarray(outputs, np.float64)
    if kind == "probabilities":
        probabilities = scores
    else:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)  # log-probabilities: the same softmax
    return probabilities[np.arange(len(scores)), np.asarray(labels)]


SHIFT = 2  # pixels: the views of `with_shifts` move the image this far up, down, left and right
SHIFTS = ((-SHIFT, 0), (SHIFT, 0), (0, -SHIFT), (0, SHIFT))


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Images (N x C x H x W) moved by dy rows down and dx columns right, the edge pixels repeated into the gap
    (no new values: a shifted image has the same range, and a uniform border stays uniform)."""
    h, w = x.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (abs(dy),) * 2, (abs(dx),) * 2), mode="edge")
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[:, :, top : top + h, left : left + w]


def weak(judged: dict | None) -> bool:
    """Whether the neighbours are weak judges of the labels (`judges`' vote consistency below RELIABLE)."""
    return judged is not None and judged["vote_consistency"] is not None and judged["vote_consistency"] < RELIABLE


def with_shifts(suspicions: np.ndarray, shifted_doubt: np.ndarray) -> np.ndarray:
    """One model's suspicion where the neighbours are weak judges (`weak`), on images:

        suspicion_shifts(n) = (suspicion(n) + mean_v (1 - conf_v(n))) / 2        (in [0, 1]; higher = more
                                                                                likely a wrong label)

    with conf_v(n) the model's probability of the given label on the image moved by SHIFT pixels in each of the
    four directions (`SHIFTS`, `shifted`). A memorized wrong label is fitted on a narrow spike around its image, a
    right one on a wide basin, so the model doubts a wrong label on a shifted image even when it fits it on the
    image itself. Chosen by the suspects study's rules (zoo/study_suspects_views.py, docs/suspects.md): CIFAR-10
    runs never chosen on, 0.795 -> 0.845 mean AUROC; on MNIST-like data the neighbours are good judges and the
    suspicion is unchanged."""
    return (np.asarray(suspicions) + np.asarray(shifted_doubt)) / 2


def p_wrong(counts: dict[str, np.ndarray], confidence: np.ndarray) -> np.ndarray | None:
    """The fitted probability that each sample's given label is wrong, from the input, early and feature spaces'
    counts (None without all three)."""
    fitted = ("d_input", "d_early", "d_features")
    if not set(fitted) <= set(counts):
        return None
    t = P_WRONG["bias"] + P_WRONG["doubt"] * (1 - confidence)
    t = t + sum(P_WRONG[name] * counts[name] / K for name in fitted)
    return 1.0 / (1.0 + np.exp(-t))


def judges(c: Context) -> dict | None:
    """How reliable the neighbours are as judges of the given labels: the consistency of two disjoint votes of
    the labels among the voters (`neighbour_agreement`'s vote_consistency: near 1 when the neighbours agree on a
    sample's class, near 1/C where distance says little of the class), in the patch space, else the input space."""
    reference = c.fs.reference[voters(c)]
    for space in ("patches", "input"):
        found = neighbours_in(c, space)
        if found is not None:
            agreement = neighbour_agreement(None, reference, reference, K, neighbours=found)
            return {"space": space, "vote_consistency": agreement["vote_consistency"]}
    return None


def memorized(c: Context) -> dict | None:
    """The scorecard's memorization summary: `fraction`, the estimated share of audited training samples whose
    label is wrong (p_wrong > 0.5) and which the model predicts anyway — the share it memorized; and
    `suspect_fraction`, the share whose label the neighbours outvote (suspicion > 0.5); and `judges`, how
    reliable the neighbours are as judges of labels (below RELIABLE the suspect share overstates: with heavy label
    noise, and on natural images, many correct labels have neighbours of other classes). Needs the given labels."""
    if not c.fs.labels_used:
        return None
    chosen = voters(c)
    counts = signals(c)
    fits = c.fs.predictions[chosen] == c.fs.labels[chosen]
    wrong = p_wrong(counts, given_label_confidence(c, chosen))
    return {"fraction": None if wrong is None else float(np.mean((wrong > 0.5) & fits)),
            "suspect_fraction": float(np.mean(suspicion(counts) > THRESHOLD)), "threshold": THRESHOLD,
            "spaces": [name[2:] for name in counts], "samples": int(len(chosen)), "judges": judges(c)}


MEMORIZATION = Diagnostic(
    "memorization", "space", memorized,
    (Metric(name="memorized", path="memorization.fraction", label="memorized training samples", group="estimate",
            better=Better.LOWER, short="labels fit against the neighbours",
            meaning="estimated share of training samples the model memorized: their given label is likely wrong "
                    "(p_wrong > 0.5, a logistic model of neighbour disagreement and confidence) and the model predicts "
                    "it",
            formula="mean_n [p_wrong_n > 0.5 and ŷ_n = y_n], p_wrong = σ(10.26 d_input + 5.17 d_early + 0.77 d_feat "
                    "− 0.26 (1 − conf) − 12.38)", source="genaudit suspects study (docs/suspects.md)",
            reading="Lower is better. `genaudit suspects` lists which samples; with wrong labels in the data it "
                    "estimates how many of them the model learned by rote. Validated on MNIST-like images; on natural "
                    "images it overstates (0.35 on CIFAR-10 models that memorized nothing: docs/suspects.md).",
            tag="memorized"),),
)
