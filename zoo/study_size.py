#!/usr/bin/env python
"""Explored, not adopted: the training set's size as a term of the gap. Generalization bounds shrink as
1/sqrt(N); the votes carried to the training set's size read N only through the vote's learning curve. Two forms
were added to zoo/study_estimate.py's candidates, fixed before their first run:

- Z1N: Z1 (the shipped form) plus 1/sqrt(N), N the training set's size the audit reads (`--train-size`, else the
  data set's size: diagnostics.neighbours.input.at_training_size.size);
- TN: training accuracy minus a gap linear in 1/sqrt(N) (no vote).

Every split then chooses by the shipped rule (the sparsest form within 0.002 of the best grouped-CV MAE inside
its fitting data). Reported beside it, post hoc and not a candidate for shipping: Z1N imposed in every split.

    python zoo/study_size.py      # -> zoo/validity/size.md and .json (about 3 minutes)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_estimate as S  # noqa: E402

SIZE = "diagnostics.neighbours.input.at_training_size.size"
TERM = "inv_sqrt_size"
Z1N = "Z1N: Z1 + 1/sqrt(training set size)"
NEW = {Z1N: [*S.FORMS["Z1: X1 in the patch space"], TERM],
       "TN: training accuracy minus a gap in 1/sqrt(training set size)": [TERM]}
GROUPS = ("all", "realuse CIFAR-10", "realuse mnist (full data, clean labels)",
          "realuse fashion-mnist (full data, clean labels)", "sweep zoo", "noise zoo")


def with_size(records: list[dict]) -> list[dict]:
    """Each record's 1/sqrt(N) as a scorecard value (None where the size is unknown)."""
    for r in records:
        n = r["card"].get(SIZE)
        r["card"][TERM] = 1.0 / math.sqrt(n) if n else None
    return records


def main() -> int:
    S.PATHS[TERM] = [TERM]
    return S.explore("size", "The training set's size as a term of the gap (explored, not adopted)", with_size, NEW,
                     Z1N, GROUPS, "the rule with the size forms")


if __name__ == "__main__":
    sys.exit(main())
