#!/usr/bin/env python
"""The normalized margin distribution as a term of the gap. Jiang et al. (2019, "Predicting the generalization
gap in deep networks with margin distributions") predict the gap from the quartiles of the log normalized margins;
genaudit's scorecard has them at the feature layer (diagnostics.margins: d_n = min_{j != y} (z_y - z_j) /
||w_y - w_j||, its log over the feature spread, quartiles over the samples with d_n > 0; the study's caches hold the
same values, computed by the same function with the labels each model trained on). They were measured alone in v2
(tau <= 0.57) and left out of the estimate; the estimator since learned to read training accuracy above two
references, where margins might say how far above is safe. Two forms were added to zoo/study_estimate.py's
candidates, fixed before their first run:

- M1: Z1 (the shipped form) plus the median log normalized margin (log_q2);
- M2: Z1 plus the three quartiles (log_q1, log_q2, log_q3). Jiang et al.'s fences are linear in the quartiles of
  the logs, so they add nothing to a linear fit.

Every split then chooses by the shipped rule. Reported beside it, post hoc and not a candidate for shipping: M1
imposed in every split.

    python zoo/study_margins.py      # -> zoo/validity/margins.md and .json (about 3 minutes)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_estimate as S  # noqa: E402

QUARTILES = ("log_q1", "log_q2", "log_q3")
M1 = "M1: Z1 + the median log normalized margin"
NEW = {M1: [*S.FORMS["Z1: X1 in the patch space"], "margin_log_q2"],
       "M2: Z1 + the three quartiles of the log normalized margins": [
           *S.FORMS["Z1: X1 in the patch space"], *(f"margin_{q}" for q in QUARTILES)]}
GROUPS = ("all", "realuse CIFAR-10", "realuse mnist (full data, clean labels)",
          "realuse fashion-mnist (full data, clean labels)", "sweep zoo", "noise zoo",
          "noise zoo (60-100% wrong labels)")


def with_margins(records: list[dict]) -> list[dict]:
    """Each record's margin quartiles (the study's cache, reference = the labels it trained on) as scorecard
    values at the scorecard's own paths."""
    for r in records:
        r["card"].update({f"diagnostics.margins.{q}": r["new"]["margins"][q] for q in QUARTILES})
    return records


def main() -> int:
    for q in QUARTILES:
        S.PATHS[f"margin_{q}"] = [f"diagnostics.margins.{q}"]
    return S.explore("margins", "The normalized margin distribution as a term of the gap (exploration)",
                     with_margins, NEW, M1, GROUPS, "the rule with the margin forms", tau=True)


if __name__ == "__main__":
    sys.exit(main())
