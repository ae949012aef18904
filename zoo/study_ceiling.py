#!/usr/bin/env python
"""The reference's ceiling made explicit (the validity issue's item 2: "with the reference's ceiling modelled
explicitly"). The shipped form Z1 reads how far training accuracy lies above the model's agreement with the patch
vote. Above the labels' own agreement with that vote (the ceiling: `reference_agreement`), what a model fits comes
from one of two sources, and only one of them costs held-out accuracy:

- wrong labels it memorized: the vote disagrees with those labels, and two disjoint halves of the neighbours agree
  with each other more than with the labels (the patch vote's label noise, `vote_consistency -
  reference_agreement`);
- a reference weaker than the model: on clean, plentiful data a model beats k-NN among 2,000 images, and fits
  what no neighbour certifies without any label noise to memorize.

The term that separates them, from values the scorecard already holds (patch space, 2,000 voters):

    memorized_patches = min(max(clean_accuracy - reference_agreement, 0), max(vote_consistency - reference_agreement, 0))

what the model fits beyond the ceiling, up to the share of labels the vote calls noise. It is near 0 on clean data
(no label noise, whatever the excess), near the noise rate for a model that memorized its wrong labels, and near
min(vote error, noise rate) for one that did not. Two forms join zoo/study_estimate.py's candidates, fixed before
their first run:

- K1: Z1 (the shipped form) plus memorized_patches;
- K2: K1 plus memorized_patches times the patch vote's consistency (Z1's pattern: each term's weight moved by how
  reliable the patch neighbours are).

Every split then chooses by the shipped rule (the sparsest form within 0.002 of the best grouped-CV MAE inside its
fitting data, least squares or least absolute deviations). Reported beside it, post hoc and not a candidate for
shipping: K1 imposed in every split.

    python zoo/study_ceiling.py      # -> zoo/validity/ceiling.md and .json (about 3 minutes)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_estimate as S  # noqa: E402

TERM = "diagnostics.neighbours.patches.memorized"
K1 = "K1: Z1 + what the model fits beyond the patch vote's ceiling, up to its label noise"
NEW = {K1: [*S.FORMS["Z1: X1 in the patch space"], "memorized_patches"],
       "K2: K1 + that term weighted by the patch vote's reliability": [
           *S.FORMS["Z1: X1 in the patch space"], "memorized_patches", "memorized_patches_x_patch_reliability"]}
GROUPS = ("all", "realuse CIFAR-10", "realuse mnist (full data, clean labels)",
          "realuse fashion-mnist (full data, clean labels)", "realuse mnist (full data)",
          "realuse fashion-mnist (full data)", "sweep zoo", "noise zoo", "noise zoo (0-40% wrong labels)",
          "noise zoo (60-100% wrong labels)")


def memorized(card: dict) -> float | None:
    """The term, from a record's patch-space values (None when one is missing)."""
    base = S.PATCHES
    values = [card.get(path) for path in ("clean_accuracy", f"{base}.reference_agreement", f"{base}.vote_consistency")]
    if any(v is None for v in values):
        return None
    accuracy, reference, consistency = values
    return min(max(accuracy - reference, 0.0), max(consistency - reference, 0.0))


def with_memorized(records: list[dict]) -> list[dict]:
    """Each record's term as a scorecard value at TERM."""
    for r in records:
        value = memorized(r["card"])
        if value is not None:
            r["card"][TERM] = value
    return records


def main() -> int:
    S.PATHS["memorized_patches"] = [TERM]
    S.PATHS["memorized_patches_x_patch_reliability"] = ([TERM], [f"{S.PATCHES}.vote_consistency"])
    return S.explore("ceiling", "The patch vote's ceiling made explicit: what a model fits beyond it, up to its label "
                     "noise (exploration)", with_memorized, NEW, K1, GROUPS, "the rule with the ceiling forms",
                     tau=True)


if __name__ == "__main__":
    sys.exit(main())
