"""The options of an audit, declared once: the Python API, every CLI command and the config file read them here.

`DataOptions` say which samples are audited and how they are preprocessed; `AuditOptions` say what is measured.
Each field carries its command-line help (and flag spelling where it is not `--field-name`) and, for a number,
the `Range` of values it takes; `cli.py` builds the commands' options from these declarations and
`genaudit.audit`/`genaudit.compare` take them as keywords with the same names. A value out of its range is
refused when the options are made, before any work: on the command line, in the config file and in Python.
"""

from __future__ import annotations

import inspect
import math
import operator
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import Any, Optional

from genaudit.errors import GenauditError


@dataclass(frozen=True)
class Range:
    """The values a numeric option takes, declared with the option: whole numbers (`whole`) or finite numbers
    from `low` to `high` (`low` itself excluded when `above`), or one of `choices`; with `count` (fewest, most;
    most None = no limit), that many comma-separated numbers ('224,224'), each in range. The command line, the
    config file and the Python API all check an option's value against it before any work."""

    low: float | None = None
    high: float | None = None
    whole: bool = True
    above: bool = False
    choices: tuple = ()
    count: tuple[int, int | None] | None = None

    def describe(self) -> str:
        """What the option takes, as a message says it: 'a whole number of at least 1'."""
        if self.choices:
            return " or ".join(map(str, self.choices))
        low, high = (f"{v:g}" if isinstance(v, float) else str(v) for v in (self.low, self.high))
        if self.low is not None and self.high is not None:
            bounds = f"greater than {low} and at most {high}" if self.above else f"from {low} to {high}"
        elif self.low is not None:
            bounds = f"greater than {low}" if self.above else f"of at least {low}"
        else:
            bounds = "" if self.high is None else f"of at most {high}"
        if self.count is None:
            return " ".join(filter(None, ["a whole number" if self.whole else "a finite number", bounds]))
        fewest, most = self.count
        many = (str(fewest) if fewest == most else f"{fewest} or more" if most is None else
                f"{fewest} or {most}" if most == fewest + 1 else f"{fewest} to {most}")
        kind = "whole numbers" if self.whole else "finite numbers"
        return " ".join(filter(None, [many, "comma-separated", kind, bounds.removeprefix("of ")]))

    def convert(self, value: Any) -> Any:
        """`value` (a number, a sequence of them, or text as typed) as the option's number(s): an int or float,
        or with `count` a tuple of them. A value out of range (NaN and infinities included) is a ValueError
        saying what the option takes."""
        if self.count is None:
            return self._number(value, value)
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
        converted = tuple(self._number(item, value) for item in items)
        fewest, most = self.count
        if len(converted) < fewest or (most is not None and len(converted) > most):
            raise ValueError(self._expected(value))
        return converted

    def parse(self, value: Any, name: str) -> Any:
        """`convert`, with a bad value a user error naming the option (`name`)."""
        try:
            return self.convert(value)
        except ValueError as exc:
            raise GenauditError(f"{name} {exc}.") from None

    def _number(self, item: Any, value: Any) -> int | float:
        try:
            if isinstance(item, bool) or not isinstance(item, (str, Real)):
                raise TypeError
            if isinstance(item, str):
                number = int(item.strip()) if self.whole else float(item.strip())
            else:
                number = operator.index(item) if self.whole else float(item)
        except (TypeError, ValueError):
            raise ValueError(self._expected(value)) from None
        inside = (math.isfinite(number) and (self.high is None or number <= self.high)
                  and (self.low is None or number > self.low or (number == self.low and not self.above)))
        if not (number in self.choices if self.choices else inside):
            raise ValueError(self._expected(value))
        return number

    def _expected(self, value: Any) -> str:
        shown = value if isinstance(value, str) and value.strip() else repr(value)
        return f"must be {self.describe()} (got {shown})"


def option(default: Any, help: str, *flags: str, cli: Any = None, envvar: str | None = None,
           record: str | None = None, bounds: Range | None = None) -> Any:
    """A dataclass field with its command-line declaration: help text, flag spellings (default `--name`), the
    type Typer parses (default: the field's), an environment variable, the key it is recorded under in the
    scorecard's `options` (None: as named; "" = not recorded), and for a number the values it takes."""
    return field(default=default, metadata={"help": help, "flags": flags, "cli": cli, "envvar": envvar,
                                            "record": record, "bounds": bounds})


def internal(default: Any, record: str | None = None, bounds: Range | None = None) -> Any:
    """A field the Python API takes but the command line does not offer (a fixed part of the documented audit)."""
    return field(default=default, metadata={"internal": True, "record": record, "bounds": bounds})


def flag(f: Field) -> str:
    """How a field is named to the user: its command-line flag (`--head-samples`), or for a field the command
    line does not offer, its keyword."""
    if f.metadata.get("internal"):
        return f.name
    return f.metadata["flags"][0].split("/")[0] if f.metadata["flags"] else f"--{f.name.replace('_', '-')}"


class Checked:
    """Options whose numbers are checked against their declared `Range` when the options are made (so before
    any work), and kept as the plain int/float/tuple the range converts them to. None is taken where the
    field's type admits it or its default is None."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            bounds, value = f.metadata.get("bounds"), getattr(self, f.name)
            optional = f.default is None or type(None) in typing.get_args(hints[f.name])
            if bounds is None or (value is None and optional):
                continue
            object.__setattr__(self, f.name, bounds.parse(value, flag(f)))


@dataclass(frozen=True)
class DataOptions(Checked):
    """Which samples are audited and how they are preprocessed (the data itself is `--data`)."""

    split: str = option("train", "Split of a named data set (default train: no held-out data needed).")
    data_dir: Optional[Path] = option(None, "Cache folder for named data sets.", envvar="GENAUDIT_DATA_DIR")
    samples: Optional[int] = option(2000, "Number of samples (stratified, seeded subsample; all if omitted in "
                                    "Python with None).", cli=int, bounds=Range(low=1))
    train_size: Optional[int] = option(None, "How many images the model was trained on, when --data holds only a "
                                       "part of its training set (default: all of --data). The estimate reads the "
                                       "input vote at this size.", bounds=Range(low=1))
    preprocess: Any = option(None, "Preprocessing preset: unit ([0,1], the default) | raw (0..255) | center "
                             "([-1,1]) | mnist | cifar10 | imagenet (their mean/std).", cli=Optional[str])
    channels: Optional[int] = option(None, "Convert images to 1 (grayscale) or 3 (RGB) channels.",
                                     bounds=Range(choices=(1, 3)))
    resize: Any = option(None, "Resize images to H,W (or one number for square).", cli=Optional[str],
                         bounds=Range(low=1, high=4096, count=(1, 2)))
    mean: Any = option(None, "Normalization mean, one value or one per channel (overrides the preset's).",
                       cli=Optional[str], bounds=Range(whole=False, count=(1, None)))
    std: Any = option(None, "Normalization std, one value or one per channel (overrides the preset's).",
                      cli=Optional[str], bounds=Range(low=0, above=True, whole=False, count=(1, None)))
    scale: Optional[float] = option(None, "Multiply raw pixel values by this before normalizing (default 1/255 for "
                                    "8-bit images: [0,1]).", bounds=Range(low=0, above=True, whole=False))

    def preprocessing(self):
        """The Preprocess these options describe (`preprocess` may also be a ready Preprocess object)."""
        from genaudit.data import Preprocess

        if isinstance(self.preprocess, Preprocess):
            return self.preprocess
        size = None if self.resize is None else (self.resize[0], self.resize[-1])  # one number: a square
        return Preprocess.from_preset(self.preprocess, channels=self.channels, resize=size, mean=self.mean,
                                      std=self.std, scale=self.scale)

    def load(self, data: Any, seed: int):
        """The data set these options select from `data` (a spec string, a path, or arrays: `(x, y)` or
        `{"x": ..., "y": ...}`)."""
        from genaudit.data import load_data

        return load_data(data, split=self.split, data_dir=self.data_dir, samples=self.samples, seed=seed,
                         preprocess=self.preprocessing(), train_size=self.train_size)


@dataclass(frozen=True)
class AuditOptions(Checked):
    """What is measured and how; the defaults are the documented default audit."""

    layer: Optional[str] = option(None, "Feature layer (default: the classifier's input). See `genaudit layers`.")
    layers: Optional[str] = option(None, "Per-layer table of the layer-wise diagnostics: 'all' or comma-separated "
                                   "layer names.")
    labels: bool = option(True, "Use the data's labels when it has them; without, accuracy means agreement with "
                          "the model's own predictions.", "--labels/--no-labels", record="use_labels")
    seed: int = option(0, "Seed for subsampling, ablation orders and noise.", record="",
                       bounds=Range(low=0, high=2**32 - 1))
    repeats: int = option(5, "Random unit orders averaged in the ablation curve.", record="ablation_repeats",
                          bounds=Range(low=1, high=1000))
    probes: int = option(0, "Run the input-space probes (noise and augmentation agreement; they rerun the whole "
                         "model) on this many samples. 0 = off.", record="probe_samples", bounds=Range(low=0))
    head_samples: int = option(500, "Samples the head-evaluated curves (ablation, noise, ordered ablation, unit "
                               "importance) use when the head is not one affine map (at a conv layer it reruns for "
                               "each of ~220 variants): a seeded subsample stratified by the predicted class (the "
                               "same with or without labels); the random-order ablation, whose error is the spread "
                               "over unit orders, uses at most half as many. 0 = all. A closed-form head always uses "
                               "all samples.",
                               bounds=Range(low=0))
    layout: Optional[str] = option(None, "How the model takes images: nchw | nhwc (channels-last, e.g. TensorFlow "
                                   "exports) | flat (vectors). Default: detected from the model's declared input.")
    output: Optional[str] = option(None, "The model output holding the class scores, by name or index (default: "
                                   "the one named *logit*, else the first a classification layer produces).")
    device: str = option("auto", "Where the model runs: auto (the GPU when onnxruntime has CUDA, else the CPU) | "
                         "cpu | cuda (needs onnxruntime-gpu: pip install 'genaudit[gpu]').")
    ablation_levels: int = internal(21, bounds=Range(low=2, high=1001))
    noise_levels: int = internal(11, bounds=Range(low=2, high=1001))
    noise_max: float = internal(2.0, bounds=Range(low=0, above=True, whole=False))
    # units whose single-unit ablation importance is measured (a seeded subset; a correlation needs two)
    importance_units: int = internal(64, bounds=Range(low=2))
    batch_size: int = internal(256, record="", bounds=Range(low=1))
    threads: Optional[int] = option(None, "Threads one audit may keep busy: onnxruntime's, numpy's BLAS and "
                                    "genaudit's own (default: one per core this process may run on, BLAS one; "
                                    "1 also holds the least memory). The scorecard is the same with any number.", record="",
                                    bounds=Range(low=1))

    def record(self) -> dict:
        """The options as the scorecard records them (`options`; layer and seed are recorded on their own)."""
        out = {}
        for f in fields(self):
            key = f.metadata.get("record")
            if key != "" and f.name != "layer":
                out[key or f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True)
class RunOptions(Checked):
    """Where a series of audits runs (`compare`, `validate`): here, in parallel processes, or on a Ray cluster.
    Where they run never changes a number: the same models and options give the same documents."""

    backend: str = option("local", "Where the audits run: local (this machine, --jobs processes) | ray (one Ray "
                          "task per model; needs pip install 'genaudit[ray]').")
    jobs: int = option(1, "Local backend: audit in this many parallel processes (they share the cores; never more "
                       "processes than models).", bounds=Range(low=1))
    ray_address: Optional[str] = option(None, "Ray backend: the cluster to join (e.g. ray://head:10001 or auto); "
                                        "default: RAY_ADDRESS, else a local Ray instance on this machine.",
                                        envvar="RAY_ADDRESS")
    task_cpus: int = option(1, "Ray backend: CPUs each audit task reserves (and the threads it runs with).",
                            bounds=Range(low=1))

    def check(self) -> None:
        """Refuse an impossible choice before any work (exit 2 on the command line)."""
        if self.backend not in ("local", "ray"):
            raise GenauditError(f"--backend must be 'local' or 'ray' (got '{self.backend}').")
        if self.backend == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise GenauditError("--backend ray needs Ray, which is not installed: pip install 'genaudit[ray]' "
                                    "(or use --backend local).")
            self._check_reachable()

    def _check_reachable(self) -> None:
        """A cluster address that nothing answers on is refused at once (Ray itself retries for minutes)."""
        import os
        import socket

        address = self.ray_address or os.environ.get("RAY_ADDRESS")
        if address in (None, "", "auto", "local"):
            return
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or "localhost", int(port)), timeout=5).close()
        except (OSError, ValueError) as exc:
            raise GenauditError(
                f"--ray-address {address}: no Ray cluster answers there ({exc}). Start one with `ray start --head`, "
                "or point --ray-address (or RAY_ADDRESS) at its head: host:6379, or ray://host:10001 for Ray Client."
            ) from None


GROUPS = (DataOptions, AuditOptions)


def cli_fields(cls: type) -> list:
    """The fields of an options class that the command line offers."""
    return [f for f in fields(cls) if not f.metadata.get("internal")]


def build(options: dict[str, Any], *classes: type) -> tuple:
    """Split keyword options into one instance per options class; an unknown keyword names the known ones."""
    known = {f.name: cls for cls in classes for f in fields(cls)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return tuple(cls(**{k: v for k, v in options.items() if known[k] is cls}) for cls in classes)


def signature(function, *classes: type) -> inspect.Signature:
    """`function`'s signature with the fields of `classes` as typed keyword-only parameters (for help())."""
    own = [p for p in inspect.signature(function).parameters.values() if p.kind is not p.VAR_KEYWORD]
    extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type,
                               default=f.default if f.default is not MISSING else inspect.Parameter.empty)
             for cls in classes for f in fields(cls) if f.name not in {p.name for p in own}]
    return inspect.signature(function).replace(parameters=own + extra)


__all__ = ["AuditOptions", "DataOptions", "Range", "RunOptions", "build", "cli_fields", "flag", "signature"]
