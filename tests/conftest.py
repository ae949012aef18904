"""Shared fixtures: tiny models and data made by the tests themselves (no network, seconds to build)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_MODELS = REPO / "sample_models"


def assert_user_error(result, *phrases):
    """A CLI result is a user error: exit 2, one message containing each phrase (the console wraps long lines and
    paths anywhere, so whitespace is ignored), no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = "".join(result.output.split())
    for phrase in phrases:
        assert "".join(phrase.split()) in text, result.output


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Converted-model cache and named-data cache in a per-session temp folder; never download."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("GENAUDIT_CACHE", str(root / "cache"))
    monkeypatch.setenv("GENAUDIT_DATA_DIR", str(root / "data-cache"))
    monkeypatch.setenv("GENAUDIT_OFFLINE", "1")


@pytest.fixture
def lane_workers(monkeypatch) -> list:
    """The `workers` each audit's main diagnostics run (`registry.run` with the neighbour votes) was given."""
    from genaudit import pipeline

    seen, real = [], pipeline.run

    def spy(diagnostics, context, workers=1):
        if any(d.kind == "space" for d in diagnostics):
            seen.append(workers)
        return real(diagnostics, context, workers)

    monkeypatch.setattr(pipeline, "run", spy)
    return seen


def export_all(module, example, folder: Path, name: str) -> dict[str, Path]:
    """Save one eager module as scripted + traced TorchScript, ONNX (dynamic batch) and torch.export."""
    import torch

    module = module.eval()
    paths = {fmt: folder / f"{name}{ext}" for fmt, ext in
             [("script", ".pt"), ("trace", ".traced.pt"), ("onnx", ".onnx"), ("export", ".pt2")]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.script(module).save(str(paths["script"]))
        torch.jit.trace(module, example).save(str(paths["trace"]))
        torch.onnx.export(module, (example,), str(paths["onnx"]), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        torch.export.save(program, str(paths["export"]))
    return paths


def write_mnist(raw: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's four raw idx files (train and t10k, both holding `images`/`labels`) in torchvision layout."""
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
            (raw / f"{split}-{kind}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_mlp(seed: int = 0, softmax: bool = False):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, 16)
            self.fc2 = nn.Linear(16, 4)
            self.probabilities = softmax

        def forward(self, x):
            out = self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))
            return torch.softmax(out, dim=1) if self.probabilities else out

    return MLP()


def tiny_cnn(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(24, 4)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    return CNN()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """200 labelled 1x8x8 uint8 images of 4 classes whose class is visible in the pixels."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    x = rng.integers(0, 60, size=(200, 8, 8))
    for c in range(4):  # each class lights one quadrant
        r, q = divmod(c, 2)
        x[y == c, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 150
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=x.astype(np.uint8), y=y)
    return path


@pytest.fixture(scope="session")
def trained_mlp(tmp_path_factory, tiny_data):
    """A tiny MLP trained on tiny_data, in all four formats."""
    import torch

    data = np.load(tiny_data)
    x = torch.tensor(data["x"][:, None] / 255.0, dtype=torch.float32)
    y = torch.tensor(data["y"])
    model = tiny_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return export_all(model, x[:2], tmp_path_factory.mktemp("mlp"), "mlp")


@pytest.fixture(scope="session")
def cnn_paths(tmp_path_factory):
    import torch

    return export_all(tiny_cnn(), torch.zeros(2, 1, 8, 8), tmp_path_factory.mktemp("cnn"), "cnn")
