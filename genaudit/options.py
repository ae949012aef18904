"""The options of an audit, declared once: the Python API, every CLI command and the config file read them here.

`DataOptions` say which samples are audited and how they are preprocessed; `AuditOptions` say what is measured.
Each field carries its command-line help (and flag spelling where it is not `--field-name`); `cli.py` builds
the commands' options from these declarations and `genaudit.audit`/`genaudit.compare` take them as keywords
with the same names.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from genaudit.errors import GenauditError


def option(default: Any, help: str, *flags: str, cli: Any = None, envvar: str | None = None,
           record: str | None = None) -> Any:
    """A dataclass field with its command-line declaration: help text, flag spellings (default `--name`), the
    type Typer parses (default: the field's), an environment variable, and the key it is recorded under in the
    scorecard's `options` (None: as named; "" = not recorded)."""
    return field(default=default, metadata={"help": help, "flags": flags, "cli": cli, "envvar": envvar,
                                            "record": record})


def internal(default: Any, record: str | None = None) -> Any:
    """A field the Python API takes but the command line does not offer (a fixed part of the documented audit)."""
    return field(default=default, metadata={"internal": True, "record": record})


def numbers(value: str | float | tuple | list | None, what: str, kind: type = float) -> tuple | None:
    """'0.5,0.4' (as typed on the command line), one number, or a sequence -> a tuple of numbers."""
    if value is None:
        return None
    try:
        if isinstance(value, (tuple, list)):
            return tuple(kind(v) for v in value)
        return tuple(kind(v) for v in str(value).split(","))
    except ValueError:
        raise GenauditError(f"{what} takes comma-separated numbers, e.g. 0.5 or 0.5,0.5,0.5 (got '{value}').") from None


@dataclass(frozen=True)
class DataOptions:
    """Which samples are audited and how they are preprocessed (the data itself is `--data`)."""

    split: str = option("train", "Split of a named data set (default train: no held-out data needed).")
    data_dir: Optional[Path] = option(None, "Cache folder for named data sets.", envvar="GENAUDIT_DATA_DIR")
    samples: Optional[int] = option(2000, "Number of samples (stratified, seeded subsample; all if omitted in "
                                    "Python with None).", cli=int)
    preprocess: Any = option(None, "Preprocessing preset: unit ([0,1], the default) | raw (0..255) | center "
                             "([-1,1]) | mnist | cifar10 | imagenet (their mean/std).", cli=Optional[str])
    channels: Optional[int] = option(None, "Convert images to 1 (grayscale) or 3 (RGB) channels.")
    resize: Any = option(None, "Resize images to H,W (or one number for square).", cli=Optional[str])
    mean: Any = option(None, "Normalization mean, one value or one per channel (overrides the preset's).",
                       cli=Optional[str])
    std: Any = option(None, "Normalization std, one value or one per channel (overrides the preset's).",
                      cli=Optional[str])
    scale: Optional[float] = option(None, "Multiply raw pixel values by this before normalizing (default 1/255 for "
                                    "8-bit images: [0,1]).")

    def preprocessing(self):
        """The Preprocess these options describe (`preprocess` may also be a ready Preprocess object)."""
        from genaudit.data import Preprocess

        if isinstance(self.preprocess, Preprocess):
            return self.preprocess
        if self.channels not in (None, 1, 3):
            raise GenauditError(f"--channels must be 1 or 3 (got {self.channels}).")
        size = numbers(self.resize, "--resize", int)
        return Preprocess.from_preset(self.preprocess, channels=self.channels,
                                      resize=None if size is None else (size[0], size[-1]),
                                      mean=numbers(self.mean, "--mean"), std=numbers(self.std, "--std"),
                                      scale=self.scale)

    def load(self, data: Any, seed: int):
        """The data set these options select from `data` (a spec string, a path, or arrays: `(x, y)` or
        `{"x": ..., "y": ...}`)."""
        from genaudit.data import load_data

        return load_data(data, split=self.split, data_dir=self.data_dir, samples=self.samples, seed=seed,
                         preprocess=self.preprocessing())


@dataclass(frozen=True)
class AuditOptions:
    """What is measured and how; the defaults are the documented default audit."""

    layer: Optional[str] = option(None, "Feature layer (default: the classifier's input). See `genaudit layers`.")
    layers: Optional[str] = option(None, "Per-layer table of the layer-wise diagnostics: 'all' or comma-separated "
                                   "layer names.")
    labels: bool = option(True, "Use the data's labels when it has them; without, accuracy means agreement with "
                          "the model's own predictions.", "--labels/--no-labels", record="use_labels")
    seed: int = option(0, "Seed for subsampling, ablation orders and noise.", record="")
    repeats: int = option(5, "Random unit orders averaged in the ablation curve.", record="ablation_repeats")
    probes: int = option(0, "Run the input-space probes (noise and augmentation agreement; they rerun the whole "
                         "model) on this many samples. 0 = off.", record="probe_samples")
    head_samples: int = option(500, "Samples the head-evaluated curves (ablation, noise, ordered ablation, unit "
                               "importance) use when the head is not one affine map (at a conv layer it reruns for "
                               "each of ~220 variants): a seeded stratified subsample. 0 = all. A closed-form head "
                               "always uses all samples.")
    layout: Optional[str] = option(None, "How the model takes images: nchw | nhwc (channels-last, e.g. TensorFlow "
                                   "exports) | flat (vectors). Default: detected from the model's declared input.")
    output: Optional[str] = option(None, "The model output holding the class scores, by name or index (default: "
                                   "the one named *logit*, else the first a classification layer produces).")
    device: str = option("auto", "Where the model runs: auto (the GPU when onnxruntime has CUDA, else the CPU) | "
                         "cpu | cuda (needs onnxruntime-gpu: pip install 'genaudit[gpu]').")
    ablation_levels: int = internal(21)
    noise_levels: int = internal(11)
    noise_max: float = internal(2.0)
    importance_units: int = internal(64)  # units whose single-unit ablation importance is measured (seeded subset)
    batch_size: int = internal(256, record="")
    threads: Optional[int] = internal(None, record="")  # onnxruntime intra-op threads (None: one per core)

    def record(self) -> dict:
        """The options as the scorecard records them (`options`; layer and seed are recorded on their own)."""
        out = {}
        for f in fields(self):
            key = f.metadata.get("record")
            if key != "" and f.name != "layer":
                out[key or f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True)
class RunOptions:
    """Where a series of audits runs (`compare`, `validate`): here, in parallel processes, or on a Ray cluster.
    Where they run never changes a number: the same models and options give the same documents."""

    backend: str = option("local", "Where the audits run: local (this machine, --jobs processes) | ray (one Ray "
                          "task per model; needs pip install 'genaudit[ray]').")
    jobs: int = option(1, "Local backend: audit in this many parallel processes (they share the cores).")
    ray_address: Optional[str] = option(None, "Ray backend: the cluster to join (e.g. ray://head:10001 or auto); "
                                        "default: RAY_ADDRESS, else a local Ray instance on this machine.",
                                        envvar="RAY_ADDRESS")
    task_cpus: int = option(1, "Ray backend: CPUs each audit task reserves (and the threads it runs with).")

    def check(self) -> None:
        """Refuse an impossible choice before any work (exit 2 on the command line)."""
        if self.backend not in ("local", "ray"):
            raise GenauditError(f"--backend must be 'local' or 'ray' (got '{self.backend}').")
        if self.jobs < 1 or self.task_cpus < 1:
            raise GenauditError("--jobs and --task-cpus take a whole number of at least 1.")
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


__all__ = ["AuditOptions", "DataOptions", "RunOptions", "build", "cli_fields", "numbers", "signature"]
