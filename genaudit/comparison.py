"""Compare checkpoints or a sweep: audit every model on the same samples, rank them, find where to stop.

    import genaudit
    result = genaudit.compare(["ckpt_1.onnx", "ckpt_2.onnx"], "mnist")   # -> dict; result["selected"]
"""

from __future__ import annotations

import glob
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from genaudit.backends import Failure, run_tasks, succeeded
from genaudit.data import Dataset
from genaudit.diagnostics import DRIFT
from genaudit.diagnostics.similarity import Representation
from genaudit.errors import GenauditError, did_you_mean
from genaudit.metrics import BY_NAME, PRIMARY, Better, Metric
from genaudit.models import SUFFIXES
from genaudit.options import AuditOptions, DataOptions, RunOptions, build, signature
from genaudit.pipeline import audit_dataset
from genaudit.scorecard import SCHEMA_VERSION, Scorecard, lookup
from genaudit.spaces import VOTERS
from genaudit.threads import budget
from genaudit.version import __version__

def natural_key(path: Path) -> list:
    """Sort key that orders epoch_2 before epoch_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def model_files(folder: Path) -> list[Path]:
    """The model files directly in a folder (by suffix), unordered."""
    return [p for p in Path(folder).iterdir() if p.suffix in SUFFIXES and p.is_file()]


def expand(models: list[str | Path], order: str = "natural") -> list[Path]:
    """Model files from paths, globs and folders; 'natural' sorts by the numbers in the names (epoch/step),
    'given' keeps the order given."""
    found: list[Path] = []
    for item in map(str, models):
        if Path(item).is_dir():
            found += model_files(Path(item))
        elif any(ch in item for ch in "*?["):
            found += [Path(p) for p in glob.glob(item)]
        else:
            found.append(Path(item))
    if not found:
        raise GenauditError(f"No model files found in {', '.join(map(str, models))}.")
    unique = list(dict.fromkeys(found))
    if order == "natural":
        unique.sort(key=natural_key)
    elif order != "given":
        raise GenauditError(f"--order must be 'natural' or 'given' (got '{order}').")
    return unique


def audit_task(model: Path, dataset: Dataset, opts: AuditOptions) -> Scorecard:
    """One model's audit as a backend task (importable, so a process pool or a Ray worker can run it)."""
    return audit_dataset(model, dataset, opts)


def audit_all(paths: list[Path], dataset: Dataset, opts: AuditOptions, run: RunOptions = RunOptions(),
              progress: Callable[[int, int], None] | None = None) -> tuple[list[Path], list[Scorecard], list[Failure]]:
    """Audit every model on the same data set on the chosen backend. Returns the audited models (in series
    order), their scorecards, and the models that failed with why; no model audited is a user error."""
    cards, failures = run_tasks(audit_task, paths, (dataset, opts), run, progress)
    return (*succeeded(paths, cards, failures), failures)


def early_stopping(values: list[float | None], train_accuracy: list[float | None], tolerance: float = 0.01,
                   name: str = "score") -> dict:
    """Where the ranking metric (`name`, oriented: higher is better) peaks in an ordered series, and where
    memorization sets in: the first later checkpoint whose value has fallen by more than `tolerance` below the
    peak while training accuracy kept rising."""
    scored = [(i, v) for i, v in enumerate(values) if v is not None]
    if not scored:
        return {"peak": None, "memorization_onset": None, "evidence": f"no checkpoint has a value of {name}"}
    peak = max(scored, key=lambda iv: iv[1])[0]
    onset = None
    if any(a is None for a in train_accuracy):
        evidence = "no labels: training accuracy unknown, so memorization onset cannot be told from underfitting"
    else:
        for i in range(peak + 1, len(values)):
            if values[i] is not None and values[i] < values[peak] - tolerance and train_accuracy[i] > train_accuracy[peak]:
                onset = i
                break
        evidence = (f"{name} keeps within tolerance of its peak or training accuracy stops rising after it"
                    if onset is None else
                    f"{name} {values[peak]:.3f} → {values[onset]:.3f} while training accuracy "
                    f"{train_accuracy[peak]:.3f} → {train_accuracy[onset]:.3f}")
    return {"peak": peak, "memorization_onset": onset, "evidence": evidence}


def drift(cards: list[Scorecard]) -> list[dict]:
    """Linear CKA and SVCCA of each model's feature layer with the previous model and with the last one (each
    model's representation prepared once: centering, Gram norm and SVD are not repeated per pair), within the
    thread budget (BLAS's own threads made this step's SVDs 40x slower on busy cores)."""
    with budget(None):
        prepared = [Representation(c.unit_values) for c in cards]
        return [{"previous": DRIFT.compute((prepared[i - 1], rep)) if i > 0 else None,
                 "final": DRIFT.compute((rep, prepared[-1]))} for i, rep in enumerate(prepared)]


# What ranks when the default, the estimate of held-out accuracy, has no value for any model (genaudit gives no
# estimate without labels): the generalization score, label-free and documented to rank models of one task.
LABEL_FREE = "score"


def rank_metric(cards: list[Scorecard], rank_by: str | None) -> Metric:
    """The metric that ranks `cards`: `rank_by` when given, else the estimate (PRIMARY), else, when no model has
    an estimate (audited without labels), the label-free score (LABEL_FREE). A metric given by name that no
    model has a value of cannot rank: a user error naming it."""
    if rank_by is None:
        has_estimate = any(lookup(c, BY_NAME[PRIMARY].path) is not None for c in cards)
        return BY_NAME[PRIMARY if has_estimate or not cards else LABEL_FREE]
    metric = BY_NAME[rank_by]
    if cards and all(lookup(c, metric.path) is None for c in cards):
        unlabelled = " (the models were audited without labels)" if cards[0]["label_mode"] == "predictions" else ""
        raise GenauditError(f"--rank-by {rank_by}: no model has a value of {metric.name}{unlabelled}, so it cannot "
                            f"rank them. Rank by a metric they have, e.g. --rank-by {LABEL_FREE} (label-free), or "
                            "leave --rank-by out for the default.")
    return metric


def summarize(paths: list[Path], cards: list[Scorecard], data_spec: dict, rank_by: str | None = None,
              failures: list[Failure] = ()) -> dict:
    """The comparison document for audited models in series order: ranking (by `rank_by`, else the default of
    `rank_metric`), early stopping, drift, selection (and the models that could not be audited, with why)."""
    metric = rank_metric(cards, rank_by)
    values = [lookup(c, metric.path) for c in cards]
    keyed = [metric.better.oriented(v) for v in values]
    ranking = sorted((i for i, v in enumerate(keyed) if v is not None), key=lambda i: -keyed[i])
    errors = [lookup(c, metric.error) if metric.error else None for c in cards]
    stop = early_stopping(keyed, [c["clean_accuracy"] for c in cards], name=metric.name)
    similarity = drift(cards)
    name = lambda i: None if i is None else str(paths[i])  # noqa: E731
    rows = [{"model": str(p), "rank": ranking.index(i) + 1 if i in ranking else None, "value": values[i],
             "clean_accuracy": cards[i]["clean_accuracy"], "drift": similarity[i]} for i, p in enumerate(paths)]
    return {
        "schema_version": SCHEMA_VERSION,
        "genaudit_version": __version__,
        "data": data_spec,
        "rank_by": {"metric": metric.name, "path": metric.path, "better": metric.better},
        "models": rows,
        "ranking": [str(paths[i]) for i in ranking],
        "selected": name(ranking[0] if ranking else None),
        "selection": selection(ranking, keyed, errors, name, [c["model"]["sha256"] for c in cards], metric.name,
                               more_samples_separate(metric, cards)),
        "early_stopping": {"peak": name(stop["peak"]), "memorization_onset": name(stop["memorization_onset"]),
                           "evidence": stop["evidence"]},
        "failed": [f.as_dict() for f in failures],
        "scorecards": [dict(c) for c in cards],
    }


def more_samples_separate(metric: Metric, cards: list[Scorecard]) -> bool:
    """Would auditing more samples shrink the sampling error that ties models on `metric`? Not for the estimate
    or a neighbour vote once every audit's votes ran among VOTERS samples: the votes never run among more,
    whatever --samples is (within the validity study's full-data runs, 4,000 samples per checkpoint picked within
    0.5 points in the same runs as 2,000, with about as many ties: docs/validity.md)."""
    if metric.name != PRIMARY and not metric.path.startswith("neighbours."):
        return True
    return any((lookup(c, "diagnostics.neighbours.input.samples") or 0) < VOTERS for c in cards)


def selection(ranking: list[int], values: list[float | None], errors: list[float | None], name,
              digests: list[str] = (), metric: str = "the ranking metric", more_samples: bool = True) -> dict:
    """Is the best model better than the rest beyond sampling error? The models whose (oriented) value is within
    two combined standard errors of the best one's are tied with it (identical values always are), and so are
    its copies (`digests`: each model's sha256; files with the same one are the same model, whatever their
    paths). One model alone, or only copies of one, is never a significant pick: there is nothing to tell it
    from; nor is a pick whose `metric` carries no standard error (None in `errors`): whether it is better beyond
    sampling error is unknown. The selection is always the best value (`ranking[0]`), and the reasons say so, and
    whether auditing more samples could separate tied models (`more_samples`, from `more_samples_separate`)."""
    if not ranking:
        return {"significant": False, "tied_with": [], "why": f"no model has a value of {metric}"}
    best = ranking[0]
    spread = [e or 0.0 for e in errors]
    copies = [i for i in ranking[1:] if digests and digests[i] == digests[best]]
    tied = [i for i in ranking[1:]
            if i in copies or values[best] - values[i] <= 2 * math.hypot(spread[best], spread[i])
            or values[i] == values[best]]
    if len(copies) == len(ranking) - 1:  # one model alone, or with copies of itself only
        why = (f"only one model{' (the others are copies of it: the same file contents)' if copies else ''}: "
               "nothing to compare it with")
        return {"significant": False, "tied_with": [name(i) for i in tied], "why": why}
    close = len(tied) - len(copies)
    unmeasured = any(errors[i] is None for i in ranking)
    if close:
        advice = ("audit more samples, --samples, to separate them" if more_samples else
                  f"more samples will not separate them: the neighbour votes {metric} reads run among {VOTERS:,} "
                  "samples whatever --samples is; measure the tied models on held-out data if the choice matters")
        why = (f"within two standard errors of sampling of {close} other model(s): the data cannot tell them apart; "
               f"the best {metric} among them is selected ({advice})")
    elif unmeasured:
        why = (f"the best {metric}, but {metric} carries no measured sampling error: whether it is better than the "
               "others beyond sampling error is unknown")
    else:
        why = "better than every other model beyond two standard errors of sampling"
    if copies:
        why = (f"{len(copies)} other file(s) are copies of it (the same contents, so the same model): which of them "
               f"is picked is arbitrary; {why}")
    return {"significant": not tied and not unmeasured, "tied_with": [name(i) for i in tied], "why": why}


def check_rank_metric(rank_by: str) -> None:
    """Refuse an unknown or descriptive ranking metric (before any work)."""
    if rank_by not in BY_NAME:
        raise GenauditError(f"--rank-by: unknown metric '{rank_by}'.{did_you_mean(rank_by, BY_NAME)} See "
                            "`genaudit explain`.")
    if BY_NAME[rank_by].better is Better.DESCRIPTIVE:
        raise GenauditError(f"--rank-by {rank_by} is descriptive (no better side); pick a directional metric.")


def compare(models: list[str | Path], data: Any = "sample", *, order: str = "natural", rank_by: str | None = None,
            progress: Callable[[int, int], None] | None = None, **options) -> dict:
    """Audit a series of models on the same samples (data loaded once); rank them by `rank_by` (default: the
    estimate of held-out accuracy, or without labels the label-free score: see `rank_metric`), find the
    early-stopping point and select the best. The keyword options are those of `genaudit compare` (same names
    as `genaudit.audit`'s, plus where the audits run: `backend="local"|"ray"`, `jobs`, `ray_address`,
    `task_cpus`). Returns the comparison document (every scorecard inside; models that failed under
    `failed`)."""
    if rank_by is not None:
        check_rank_metric(rank_by)
    data_opts, opts, run = build(options, DataOptions, AuditOptions, RunOptions)
    run.check()
    paths = expand(models, order)
    dataset = data_opts.load(data, opts.seed)
    audited, cards, failures = audit_all(paths, dataset, opts, run, progress)
    return summarize(audited, cards, dataset.spec, rank_by, failures)


compare.__signature__ = signature(compare, DataOptions, AuditOptions, RunOptions)


class Watcher:
    """Audits the checkpoints that appear in a folder, one by one, on data loaded once."""

    def __init__(self, folder: Path, data: Any, **options):
        """`options`: those of `genaudit.audit`."""
        self.folder = Path(folder)
        data_opts, self.opts = build(options, DataOptions, AuditOptions)
        self.dataset = data_opts.load(data, self.opts.seed)
        self.cards: dict[Path, Scorecard] = {}

    def poll(self, interval: float, polls: int = 0,
             found: Callable[[list[Path]], None] = lambda new: None) -> Iterator[dict | None]:
        """Each look yields the updated comparison when new checkpoints were audited, else None; before auditing,
        `found` is told the look's new checkpoints (possibly none). Files modified in the last 2 s are left for
        the next look (they may still be being written)."""
        looks = 0
        while True:
            now = time.time()
            ready = sorted((p for p in model_files(self.folder)
                            if p not in self.cards and now - p.stat().st_mtime > 2), key=natural_key)
            found(ready)
            for path in ready:
                self.cards[path] = audit_dataset(path, self.dataset, self.opts)
            paths = sorted(self.cards, key=natural_key)
            yield summarize(paths, [self.cards[p] for p in paths], self.dataset.spec) if ready else None
            looks += 1
            if polls and looks >= polls:
                return
            time.sleep(interval)
