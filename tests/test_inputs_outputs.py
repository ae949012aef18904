"""Every input layout and output kind a classifier comes in: genaudit's clean accuracy on a small labelled set
equals a plain onnxruntime / torch run of the same model on the same inputs.

The labels are the plain run's own predictions with every third one moved to another class, so the expected
accuracy is about 0.67 and any mistake in how genaudit feeds the model (a wrong transpose, the wrong output)
shows as a different number.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from genaudit import audit
from genaudit.errors import GenauditError
from genaudit.models import input_layout

CLASSES = 5
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(60, 3, 12, 12)).astype(np.uint8)   # N x C x H x W, as stored
GRAY = RNG.integers(0, 256, size=(60, 1, 12, 12)).astype(np.uint8)


def _torch():
    import torch

    torch.manual_seed(0)
    return torch


class Outputs(NamedTuple):  # a named-tuple output, as torchvision's GoogLeNet/Inception script to
    logits: torch.Tensor
    features: torch.Tensor


def _scriptable(kind: str):
    """Scriptable nets (TorchScript compiles every branch, so one class per output container)."""
    torch = _torch()
    from torch import nn

    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, stride=2)
            self.fc = nn.Linear(6 * 5 * 5, CLASSES)

    class AsNamedTuple(Base):
        def forward(self, x: torch.Tensor) -> Outputs:
            f = torch.relu(self.conv(x)).flatten(1)
            return Outputs(self.fc(f), f)

    class AsList(Base):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            f = torch.relu(self.conv(x)).flatten(1)
            return [self.fc(f), f]

    return {"namedtuple": AsNamedTuple, "list": AsList}[kind]().eval()


def _net(kind: str, channels: int = 3):
    """A small CNN whose forward returns its class scores in the form `kind` names."""
    torch = _torch()
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(channels, 6, 3, stride=2)
            self.fc = nn.Linear(6 * 5 * 5, CLASSES)

        def features(self, x):
            if kind == "nhwc":
                x = x.permute(0, 3, 1, 2)
            elif kind == "flat":
                x = x.reshape(-1, channels, 12, 12)
            return torch.relu(self.conv(x)).flatten(1)

        def forward(self, x):
            f = self.features(x)
            z = self.fc(f)
            if kind == "probabilities":
                return torch.softmax(z, dim=1)
            if kind == "log-probabilities":
                return torch.log_softmax(z, dim=1)
            if kind == "sigmoid":
                return torch.sigmoid(z)
            if kind == "features-first":
                return f, z
            if kind == "dict":
                return {"embedding": f, "logits": z}
            if kind == "extra":
                return z, torch.softmax(z, dim=1), f
            return z

    return Net().eval()


def _example(kind: str, channels: int = 3):
    torch = _torch()
    shape = {"nhwc": (2, 12, 12, channels), "flat": (2, channels * 144)}.get(kind, (2, channels, 12, 12))
    return torch.zeros(shape)


def _onnx(net, example, path: Path, outputs=("logits",), dynamic_axes=None, batch_free=True) -> Path:
    torch = _torch()
    names = list(outputs)
    if dynamic_axes is None and batch_free:
        dynamic_axes = {n: {0: "batch"} for n in ["input", *names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=names, dynamic_axes=dynamic_axes)
    return path


def _plain_onnx(path: Path, x: np.ndarray, output: int = 0) -> np.ndarray:
    """Class predictions of a plain onnxruntime run, one sample at a time when the batch is fixed."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0] == 1
    parts = [x[i : i + 1] for i in range(len(x))] if fixed else [x]
    return np.concatenate([session.run(None, {name: p})[output] for p in parts]).argmax(1)


def _plain_torch(path: Path, x: np.ndarray, pick) -> np.ndarray:
    torch = _torch()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return pick(torch.jit.load(str(path))(torch.from_numpy(x))).numpy().argmax(1)


def _labelled(folder: Path, images: np.ndarray, predictions: np.ndarray) -> tuple[Path, float]:
    """An .npz of the images with labels that agree with `predictions` two times in three; its accuracy."""
    y = predictions.copy()
    y[::3] = (y[::3] + 1) % CLASSES
    path = folder / "data.npz"
    np.savez(path, x=images, y=y)
    return path, float(np.mean(predictions == y))


def _unit(images: np.ndarray) -> np.ndarray:
    """The default preprocessing, by hand: 8-bit pixels to [0, 1], channels first."""
    return images.astype(np.float32) / 255.0


def _audit(model: Path, data: Path, **options):
    return audit(model, str(data), samples=None, repeats=1, importance_units=4, **options)


# ---- input layouts ----------------------------------------------------------------------------------------------

LAYOUT_CASES = {
    # case: (net kind, how the plain run arranges the NCHW data, ONNX export options, detected layout)
    "nchw, dynamic batch": ("logits", lambda x: x, {}, "nchw"),
    "nchw, batch fixed to 1": ("logits", lambda x: x, {"batch_free": False}, "nchw"),
    "nhwc (channels-last RGB)": ("nhwc", lambda x: x.transpose(0, 2, 3, 1), {}, "nhwc"),
    "flat vectors": ("flat", lambda x: x.reshape(len(x), -1), {}, "flat"),
}


@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_every_input_layout_gives_the_plain_onnxruntime_accuracy(case, tmp_path):
    kind, arrange, export, detected = LAYOUT_CASES[case]
    example = _example(kind)[:1] if not export.get("batch_free", True) else _example(kind)
    path = _onnx(_net(kind), example, tmp_path / "model.onnx", **export)
    x = np.ascontiguousarray(arrange(_unit(RGB)))
    data, expected = _labelled(tmp_path, RGB, _plain_onnx(path, x))
    card = _audit(path, data)
    assert card["model"]["input_layout"] == detected
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert 0.6 < expected < 0.7


def test_channels_last_torchscript_is_traced_channels_last(tmp_path):
    """TorchScript records no input shape: the data is tried as NCHW, flat, then NHWC, the one it accepts."""
    torch = _torch()
    path = tmp_path / "nhwc.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(_net("nhwc"), _example("nhwc")).save(str(path))
    x = _unit(RGB).transpose(0, 2, 3, 1).copy()
    data, expected = _labelled(tmp_path, RGB, _plain_torch(path, x, lambda out: out))
    card = _audit(path, data)
    assert card["model"]["input_layout"] == "nhwc" and card["model"]["input_shape"] == [12, 12, 3]
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)


def test_layout_option_overrides_a_model_that_declares_no_shape(tmp_path):
    """All input dims dynamic: NCHW is assumed (and fails to run), --layout nhwc feeds it right."""
    axes = {"input": {0: "batch", 1: "h", 2: "w", 3: "c"}, "logits": {0: "batch"}}
    net = _net("nhwc")
    path = _onnx(net, _example("nhwc"), tmp_path / "model.onnx", dynamic_axes=axes)
    data, expected = _labelled(tmp_path, RGB, _plain_onnx(path, _unit(RGB).transpose(0, 2, 3, 1).copy()))
    card = _audit(path, data, layout="nhwc")
    assert card["model"]["input_layout"] == "nhwc"
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(GenauditError, match="onnxruntime"):
        _audit(path, data)  # read as NCHW, the 3x12x12 images reach a conv that wants 3 channels in dim 3


@pytest.mark.parametrize("model, data, requested, message", [
    ((3, 12, 12), (1, 12, 12), None, r"3x12x12 per sample \(read as C x H x W\).*1x12x12.*--channels 3"),
    ((12, 12, 3), (1, 12, 12), None, r"channels-last.*--channels 3"),
    ((3, 16, 16), (3, 12, 12), None, r"--resize 16,16"),
    ((16, 16, 3), (3, 12, 12), None, r"--resize 16,16"),
    ((432,), (3, 16, 16), None, r"--layout nchw\|nhwc\|flat"),
    ((3, 12, 12), (3, 12, 12), "nhwc", r"with --layout nhwc"),
])
def test_a_mismatch_names_the_shapes_and_the_flag_that_fixes_it(model, data, requested, message):
    with pytest.raises(GenauditError, match=message):
        input_layout(model, data, requested)


def test_layouts_detected_from_shapes():
    assert input_layout((3, None, None), (3, 12, 12)) == "nchw"
    assert input_layout((None, None, 3), (3, 12, 12)) == "nhwc"
    assert input_layout((28, 28, 1), (1, 28, 28)) == "nhwc"  # the same bytes either way for one channel
    assert input_layout((784, 1), (1, 28, 28)) == "flat"
    assert input_layout((None,), (1, 28, 28)) == "flat"
    assert input_layout((12, 12, 3), (3, 12, 12), "flat") == "flat"  # asked: any reshape of the right size


# ---- outputs ----------------------------------------------------------------------------------------------------

ONNX_OUTPUT_CASES = {
    # case: (net kind, output names, --output, index of the scores for the plain run, output kind)
    "probabilities": ("probabilities", ("probs",), None, 0, "probabilities"),
    "log-probabilities": ("log-probabilities", ("logp",), None, 0, "log-probabilities"),
    "sigmoid": ("sigmoid", ("scores",), None, 0, "sigmoid scores"),
    "tuple, logits found by name": ("features-first", ("features", "logits"), None, 1, "logits"),
    "extra outputs, probabilities chosen": ("extra", ("logits", "probs", "features"), "probs", 1, "probabilities"),
    "extra outputs, chosen by index": ("extra", ("z", "p", "f"), "0", 0, "logits"),
    "tuple, features first, no names": ("features-first", ("a", "b"), None, 1, "logits"),  # b has the classifier
}


@pytest.mark.parametrize("case", ONNX_OUTPUT_CASES)
def test_every_onnx_output_kind_gives_the_plain_onnxruntime_accuracy(case, tmp_path):
    kind, names, output, index, output_kind = ONNX_OUTPUT_CASES[case]
    path = _onnx(_net(kind), _example(kind), tmp_path / "model.onnx", outputs=names)
    data, expected = _labelled(tmp_path, RGB, _plain_onnx(path, _unit(RGB), index))
    card = _audit(path, data, output=output)
    assert card["model"]["output"] == {"name": names[index], "index": index, "of": len(names)}
    assert card["model"]["output_kind"] == output_kind
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert card["layer"]["units"] == 150  # the classifier's input, whatever follows it


TORCHSCRIPT_OUTPUT_CASES = {
    # case: (net kind, how to script it, --output, how the plain run picks the scores, output name)
    "dict": ("dict", "trace", None, lambda out: out["logits"], "logits"),
    "named tuple": ("namedtuple", "script", None, lambda out: out.logits, "logits"),
    "list": ("list", "script", None, lambda out: out[0], "output_0"),
    "tuple, features first, --output 1": ("features-first", "trace", "1", lambda out: out[1], "output_1"),
    "tuple, features first": ("features-first", "trace", None, lambda out: out[1], "output_1"),
}


@pytest.mark.parametrize("case", TORCHSCRIPT_OUTPUT_CASES)
def test_every_torchscript_output_container_gives_the_plain_torch_accuracy(case, tmp_path):
    kind, how, output, pick, name = TORCHSCRIPT_OUTPUT_CASES[case]
    torch = _torch()
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = (torch.jit.script(_scriptable(kind)) if how == "script"
                    else torch.jit.trace(_net(kind), _example(kind), strict=False))
        scripted.save(str(path))
    data, expected = _labelled(tmp_path, RGB, _plain_torch(path, _unit(RGB), pick))
    card = _audit(path, data, output=output)
    assert card["model"]["output"]["name"] == name
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("kind, pick, name", [("dict", lambda out: out["logits"], "logits"),
                                              ("features-first", lambda out: out[1], None)])
def test_torch_export_container_outputs_give_the_plain_torch_accuracy(kind, pick, name, tmp_path):
    """A torch.export archive returning a dict (outputs named by key, 'logits' found) or a tuple (index)."""
    torch = _torch()
    net = _net(kind)
    program = torch.export.export(net, (_example(kind),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    with torch.no_grad():
        data, expected = _labelled(tmp_path, RGB, pick(net(torch.from_numpy(_unit(RGB)))).numpy().argmax(1))
    card = _audit(tmp_path / "model.pt2", data, output=None if name else "1")
    assert card["model"]["output"]["index"] == 1 and (name is None or card["model"]["output"]["name"] == name)
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)


def test_an_unknown_output_lists_the_outputs(tmp_path):
    path = _onnx(_net("extra"), _example("extra"), tmp_path / "model.onnx", outputs=("z", "p", "f"))
    data, _ = _labelled(tmp_path, RGB, np.zeros(len(RGB), int))
    for wrong in ("logits", "3"):
        with pytest.raises(GenauditError, match=r"0: 'z', 1: 'p', 2: 'f'"):
            _audit(path, data, output=wrong)


def test_grayscale_data_for_an_rgb_model_is_converted_only_when_asked(tmp_path):
    from genaudit.data import Preprocess

    path = _onnx(_net("logits"), _example("logits"), tmp_path / "model.onnx")
    data, expected = _labelled(tmp_path, GRAY, _plain_onnx(path, np.repeat(_unit(GRAY), 3, axis=1)))
    with pytest.raises(GenauditError, match="--channels 3"):
        _audit(path, data)
    card = _audit(path, data, preprocess=Preprocess(channels=3))
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    # TorchScript declares no input: torch's own complaint names the channels, and the message the flag
    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(_net("logits"), _example("logits")).save(str(tmp_path / "model.pt"))
    with pytest.raises(GenauditError, match=r"--channels 3 \(the model's first layer wants 3 channels, the data has 1"):
        _audit(tmp_path / "model.pt", data)
    assert _audit(tmp_path / "model.pt", data, preprocess=Preprocess(channels=3))["clean_accuracy"] == \
        pytest.approx(expected, abs=1e-12)


def test_an_embedding_output_is_refused_and_a_logits_output_beside_it_is_used(tmp_path):
    from torch import nn

    class Embedder(nn.Module):
        def __init__(self, with_logits: bool):
            super().__init__()
            self.net, self.with_logits = _net("features-first"), with_logits

        def forward(self, x):
            f, z = self.net(x)
            embedding = nn.functional.normalize(f, dim=1)
            return (embedding, z) if self.with_logits else embedding

    alone = _onnx(Embedder(False).eval(), _example("logits"), tmp_path / "embedding.onnx", outputs=("embedding",))
    data, _ = _labelled(tmp_path, RGB, np.zeros(len(RGB), int))
    with pytest.raises(GenauditError, match="'embedding' is L2-normalized: an embedding"):
        _audit(alone, data)
    both = _onnx(Embedder(True).eval(), _example("logits"), tmp_path / "both.onnx", outputs=("embedding", "logits"))
    data, expected = _labelled(tmp_path, RGB, _plain_onnx(both, _unit(RGB), 1))
    card = _audit(both, data)
    assert card["model"]["output"]["name"] == "logits"
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(GenauditError, match=r"other outputs \(logits\): pick its class scores with --output"):
        _audit(both, data, output="embedding")


def test_layers_names_the_output_it_cuts_towards(tmp_path):
    from typer.testing import CliRunner

    from genaudit.cli import app

    path = _onnx(_net("extra"), _example("extra"), tmp_path / "model.onnx", outputs=("z", "p", "f"))
    for output, shown in ((None, "output 'z' (0 of 3"), ("p", "output 'p' (1 of 3")):
        result = CliRunner().invoke(app, ["layers", str(path), *(["--output", output] if output else [])],
                                    env={"COLUMNS": "200"})
        assert result.exit_code == 0 and shown in result.output and "★" in result.output


def test_scores_per_position_are_refused(tmp_path):
    from torch import nn

    segmenter = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, CLASSES, 1)).eval()
    path = _onnx(segmenter, _example("logits"), tmp_path / "segmenter.onnx")
    data, _ = _labelled(tmp_path, RGB, np.zeros(len(RGB), int))
    with pytest.raises(GenauditError, match=r"shape \[5, 12, 12\] per sample: scores per position"):
        _audit(path, data, layer="/1/Relu_output_0")


def test_smaller_images_are_resized_only_when_asked(tmp_path):
    import torch.nn.functional as nnf
    from torch import nn

    from genaudit.data import Preprocess

    torch_ = _torch()
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, CLASSES)).eval()
    path = _onnx(net, torch_.zeros(2, 3, 16, 16), tmp_path / "model.onnx")
    resized = nnf.interpolate(torch_.from_numpy(_unit(RGB)), size=(16, 16), mode="bilinear", antialias=True,
                              align_corners=False).numpy()
    data, expected = _labelled(tmp_path, RGB, _plain_onnx(path, resized))
    with pytest.raises(GenauditError, match="--resize 16,16"):
        _audit(path, data)
    card = _audit(path, data, preprocess=Preprocess(resize=(16, 16)))
    assert card["clean_accuracy"] == pytest.approx(expected, abs=1e-12)
