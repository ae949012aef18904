"""Model sources: a file on disk (ONNX, TorchScript, torch.export) becomes an OnnxSplitter that can be cut.

Supported: `.onnx` (incl. external-data side files and fixed batch size), TorchScript (`.pt`/`.pth`/`.ts`,
scripted or traced), torch.export archives (`.pt2`). Pickled `nn.Module` files and bare state_dicts are
refused without being unpickled.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

from genaudit.errors import GenauditError
from genaudit.models.onnx_graph import Layer, OnnxSplitter, SplitModel, same_layout, split

FORMAT_NAMES = {"onnx": "onnx", "torchscript": "torchscript", "export": "torch.export"}


@dataclass
class ModelFile:
    """A model file identified by content: path, sha256 and format ('onnx', 'torchscript', 'export')."""

    path: Path
    sha256: str
    kind: str

    @property
    def format(self) -> str:
        return FORMAT_NAMES[self.kind]


def identify(path: str | Path) -> ModelFile:
    """Hash the file and tell its format from its bytes (never by unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise GenauditError(f"Model file {path} does not exist. Check the path (and that it is a file, not a folder).")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    if zipfile.is_zipfile(path):
        from genaudit.models import torch_formats

        kind = torch_formats.zip_kind(path)
        if kind in ("pickle", "state_dict"):
            raise torch_formats.refuse(kind, path)
        return ModelFile(path, sha, kind)
    if head[:1] == b"\x80":  # a raw pickle stream: the legacy torch.save format
        from genaudit.models import torch_formats

        raise torch_formats.refuse("pickle", path)
    return ModelFile(path, sha, "onnx")


def _missing_external_data(path: Path) -> list[str]:
    """Side files named by the model's external-data tensors that are not beside it (an empty list when the
    file cannot be parsed: the full load reports that)."""
    import onnx

    try:
        from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

        model = onnx.load(str(path), load_external_data=False)
        locations = {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}
    except Exception:
        return []
    return sorted(loc for loc in locations if not (path.parent / loc).is_file())


def _load_onnx(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))  # external-data weights are read from beside the file
        if not model.graph.node or not model.graph.output:
            raise ValueError("no graph in it")
    except Exception as exc:
        if missing := _missing_external_data(path):
            raise GenauditError(
                f"{path} keeps its weights in external-data files that are not beside it: {', '.join(missing)}. "
                f"Copy them into {path.parent} next to the .onnx file (ONNX reads them by that relative name)."
            ) from None
        raise GenauditError(
            f"{path} is not a readable model: not a TorchScript/torch.export archive, and as ONNX it failed with "
            f"'{str(exc).strip().splitlines()[0][:200]}'. genaudit reads .onnx, TorchScript (.pt/.pth/.ts) and "
            "torch.export (.pt2) files; if the file was truncated in transfer, copy it again."
        ) from None
    return model


def open_model(file: ModelFile, data_shape: tuple | None, cache_dir: Path) -> OnnxSplitter:
    """Open a model for splitting. `data_shape` (per sample) is needed for TorchScript, which records none."""
    if file.kind == "onnx":
        return OnnxSplitter(_load_onnx(file.path))
    import onnx

    from genaudit.models import torch_formats

    if data_shape is not None:
        candidates = [data_shape] if len(data_shape) == 1 else [data_shape, (math.prod(data_shape),)]
    elif file.kind == "export" and (shape := torch_formats.sample_input_shape(file.path)) is not None:
        candidates = [shape]
    else:
        torch_formats._forget_modules()  # the archive was loaded to look for example inputs
        raise GenauditError(
            f"{file.path} does not record the input shape it expects. Pass --input-shape C,H,W (or, for "
            "`score`, --data: the shape is taken from the data)."
        )
    data = torch_formats.to_onnx(file.path, file.kind, candidates, file.sha256, cache_dir)
    return OnnxSplitter(onnx.load_from_string(data))


def fit_input(model_shape: tuple, data_shape: tuple) -> bool:
    """Check the data against the model's declared input; True when the data must be flattened to fit (the
    model's runner then gives each flat sample the model's declared shape, e.g. 784x1 or 28x28x1).

    Raises a GenauditError that names the mismatch and the option that fixes it.
    """
    if len(model_shape) == 1 and len(data_shape) > 1:
        if model_shape[0] in (None, math.prod(data_shape)):
            return True
    elif len(model_shape) == len(data_shape) and all(m in (None, d) for m, d in zip(model_shape, data_shape)):
        return False
    elif same_layout(model_shape, data_shape):
        return True
    fmt = lambda s: "x".join("?" if d is None else str(d) for d in s)  # noqa: E731
    hint = ""
    if len(model_shape) == 3 and len(data_shape) == 3:
        fixes = []
        if None not in model_shape and sorted(model_shape) == sorted(data_shape) and tuple(model_shape) == (
                *data_shape[1:], data_shape[0]):
            raise GenauditError(
                f"The model expects channels-last inputs ({fmt(model_shape)} = H x W x C per sample), but genaudit "
                f"feeds images channels-first ({fmt(data_shape)} = C x H x W) and cannot transpose them for the "
                "model yet. Re-export the model with a channels-first input (a Transpose at its start) to audit it."
            )
        if model_shape[0] not in (None, data_shape[0]):
            fixes.append(f"--channels {model_shape[0]}")
        if tuple(model_shape[1:]) != tuple(data_shape[1:]) and None not in model_shape[1:]:
            fixes.append(f"--resize {model_shape[1]},{model_shape[2]}")
        hint = f" Convert the data with {' '.join(fixes)}." if fixes else ""
    raise GenauditError(
        f"The model expects inputs of shape {fmt(model_shape)} per sample, but the data gives {fmt(data_shape)}."
        f"{hint or ' Use data the model was trained on, or --resize/--channels to convert it.'}"
    )


__all__ = ["Layer", "ModelFile", "OnnxSplitter", "SplitModel", "fit_input", "identify", "open_model", "split"]
