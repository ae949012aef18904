"""The diagnostic registry's vocabulary: what a reported number is (`Metric`), what a diagnostic is
(`Diagnostic`: where its result goes, what it needs, how it runs), and how the pipeline runs a list of them.

Each diagnostic module declares its `Diagnostic` beside its pure function, the way torchmetrics declares
`higher_is_better` on the metric itself; `genaudit.diagnostics.REGISTRY` lists them in report order. The
pipeline, the scorecard's shape, `explain`, the thresholds and every renderer read these declarations.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Callable, Hashable, TypeVar

from genaudit.memo import Memo

if TYPE_CHECKING:  # the types only: each of these modules imports this one
    from genaudit.data import Dataset
    from genaudit.features import FeatureSet, Rows
    from genaudit.heads import Head
    from genaudit.models import CutModel
    from genaudit.options import AuditOptions

T = TypeVar("T")

GROUPS = ["estimate", "score", "accuracy", "robustness", "class structure", "magnitude", "input-space"]
KINDS = {
    "layer": "a function of the feature layer's values and the reference classes (no head): also per layer",
    "head": "runs the head on modified cached features (no trunk pass)",
    "input": "reruns the whole model on a bounded subsample (opt-in, --probes)",
    "space": "compares each audited sample with its nearest audited neighbours in a space (input, a layer)",
    "pair": "compares two checkpoints' features on the same samples (compare)",
}


class Better(StrEnum):
    """Which side of a metric is better (its value is what the scorecard's documents say: 'higher', 'lower', or
    '' for a descriptive metric, which has no better side)."""

    HIGHER = "higher"
    LOWER = "lower"
    DESCRIPTIVE = ""

    @property
    def arrow(self) -> str:
        """↑, ↓ or · (descriptive), as reports mark a metric."""
        return {Better.HIGHER: "↑", Better.LOWER: "↓"}.get(self, "·")

    def oriented(self, value: float | None) -> float | None:
        """`value` turned so that higher is better (negated when lower is); None for a descriptive metric, which
        has no better side, and for no value."""
        if value is None or self is Better.DESCRIPTIVE:
            return None
        return value if self is Better.HIGHER else -value


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One reported number: where it is in the scorecard and how to read it."""

    name: str           # for `genaudit explain NAME`, --fail-under and --rank-by
    path: str           # dotted path in the scorecard (under `diagnostics` for diagnostics)
    label: str          # what the report calls it
    group: str          # one of GROUPS
    better: Better
    short: str          # the report's meaning column (fits 80 columns)
    meaning: str        # one full line
    formula: str
    source: str
    reading: str        # how to read it
    column: str | None = None   # its key in a per-layer table row (layer-wise metrics only)
    tag: str = ""               # a column header for compact tables
    headline: bool = False      # one of the few shown in compare's table and trends
    error: str | None = None    # scorecard path of its sampling standard error, when the audit measures one

    @property
    def arrow(self) -> str:
        return self.better.arrow


@dataclass
class Context:
    """What a diagnostic may read: the cached features (`fs`), the options, and, for head and input-space
    diagnostics, the cut model, the data and its input layout; `spaces` holds the voters' rows (all samples' for
    a per-sample table) as vectors in other spaces than the feature layer ("input", "early": the first
    activation's output), as the trunk pass's `genaudit.spaces.SpaceCollector` kept them; `results` holds what
    earlier diagnostics in the registry found, by key; `shared` lets diagnostics of one family share an
    intermediate (e.g. a subsample), made once per audit; `common` one that does not depend on the labels, made
    once for the labelled diagnostics and the label-free score's rerun (`without_labels`)."""

    fs: FeatureSet
    opts: AuditOptions
    cut: CutModel | None = None
    dataset: Dataset | None = None
    layout: str = "nchw"
    spaces: dict[str, Rows] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    _shared: Memo = field(default_factory=Memo, repr=False)
    _common: Memo = field(default_factory=Memo, repr=False)

    @property
    def head(self) -> Head:
        return self.cut.head

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        """The intermediate `key` of this audit: `make()` the first time it is asked for (once, also when the
        diagnostics' lanes ask at the same time: `Memo`), the same value after."""
        return self._shared.get(key, make)

    def common(self, key: Hashable, make: Callable[[], T]) -> T:
        """As `shared`, for an intermediate that does not depend on the reference labels (e.g. the head's outputs
        on modified features): it is shared with this audit's label-free context too (`without_labels`)."""
        return self._common.get(key, make)

    def without_labels(self) -> Context:
        """This audit's context with the model's own clean predictions as the reference (what a labelled audit
        reruns its label-free score on): the same features, model and data, no earlier results, and the
        intermediates made with `common` (not those made with `shared`, which may depend on the labels)."""
        return Context(self.fs.without_labels(), self.opts, self.cut, self.dataset, self.layout, self.spaces,
                       _common=self._common)


@dataclass(frozen=True)
class Diagnostic:
    """A diagnostic: its result (a dict) goes to `diagnostics.<key>` (a dotted key nests it inside an earlier
    diagnostic's block); `compute(context)` returns it, or None when it does not apply (e.g. augmentation on
    vectors). `enabled(options)` says whether the audit runs it at all; `needs`, the keys of the earlier
    diagnostics whose results it reads (`Context.results`), which `run` waits for."""

    key: str
    kind: str
    compute: Callable[[Context], dict | None]
    metrics: tuple[Metric, ...] = ()
    enabled: Callable[[AuditOptions], bool] = lambda opts: True
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"diagnostic {self.key}: kind '{self.kind}' is not one of {', '.join(KINDS)}")

    @property
    def top(self) -> str:
        """The top-level scorecard key its result lives under."""
        return self.key.split(".")[0]


class _Lanes:
    """The diagnostics in lanes (`run`): one, or with `apart` one per kind, each in a thread of its own; each
    lane in list order; a diagnostic waits for the results it `needs` from another lane; the first error stops
    the others and is the one raised."""

    def __init__(self, chosen: list[Diagnostic], context: Context, apart: bool) -> None:
        self.context, self.values, self.error, self.failing = context, {}, None, threading.Lock()
        self.done = {d.key: threading.Event() for d in chosen}
        kinds = dict.fromkeys(d.kind for d in chosen) if apart else [None]
        self.lanes = [[d for d in chosen if kind in (None, d.kind)] for kind in kinds]

    def lane(self, diagnostics: list[Diagnostic]) -> None:
        try:
            for d in diagnostics:
                for key in d.needs:
                    if key in self.done:
                        self.done[key].wait()
                if self.error is not None:
                    return
                value = d.compute(self.context)
                if value is not None:
                    self.values[d.key] = self.context.results[d.key] = value
                self.done[d.key].set()
        except BaseException as exc:  # noqa: BLE001 (re-raised by `run`)
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """Record the first error; the lanes stop before their next diagnostic, and nobody waits for a result
        that will not come."""
        with self.failing:
            self.error = self.error or exc
        for event in self.done.values():
            event.set()

    def run(self) -> dict[str, dict]:
        if len(self.lanes) == 1:
            self.lane(self.lanes[0])
        else:
            self._side_by_side()
        if self.error is not None:
            raise self.error
        return self.values

    def _side_by_side(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from genaudit.threads import wait

        with ThreadPoolExecutor(len(self.lanes) - 1, thread_name_prefix="genaudit-lane") as pool:
            others = [pool.submit(self.lane, lane) for lane in self.lanes[1:]]
            try:
                self.lane(self.lanes[0])
                wait(others)  # wakes up, so that Ctrl-C reaches this thread at once
            except BaseException as exc:  # e.g. Ctrl-C while waiting: the other lanes stop after their diagnostic
                self.fail(exc)
                raise


def run(diagnostics: list[Diagnostic], context: Context, workers: int = 1) -> dict:
    """Run `diagnostics` on `context` and nest their results by key, in list order: the `diagnostics` block.

    With `workers` >= 2 each kind of diagnostic (the neighbour votes, the head's curves, the layer's statistics)
    runs in a thread of its own, in list order, a diagnostic waiting for the results it `needs` from another
    lane. The lanes share no intermediate (each family has its own, made once: `Context.shared`) and numpy works
    outside the GIL, so on two cores the audit takes about the longest lane instead of the sum; the values and
    their order are the same either way."""
    chosen = [d for d in diagnostics if d.enabled(context.opts)]
    values = _Lanes(chosen, context, apart=workers > 1).run()
    out: dict = {}
    for d in chosen:
        if d.key not in values:
            continue
        *parents, last = d.key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = values[d.key]
    return out
