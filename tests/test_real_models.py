"""Real models nobody here trained, and the layouts such models come in.

`fixtures/real_models/` holds two TorchScript MNIST CNNs from a public repository (MIT, LICENSE beside them):
they return a tuple (logits, activations...) and expect MNIST mean/std normalization. The ONNX variants built
here from their weights reproduce what public ONNX files look like: weights in an external-data side file,
input [1, 784, 1] with batch fixed to 1, channels-last input with a Transpose inside, a (logits, features) tuple.
Data: genaudit's shipped sample (1,000 MNIST training images), never /work/shared.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from genaudit import audit
from genaudit.data import Preprocess, load_data
from genaudit.errors import GenauditError
from genaudit.models import identify, input_layout, open_model, cut_at

REAL = Path(__file__).resolve().parent / "fixtures" / "real_models"
MNIST = Preprocess(mean=(0.1307,), std=(0.3081,))
# model -> (units of the default feature layer, op producing it): fc1's ReLU (5 units) feeding fc2; the
# flattened global average pool (10 channels) feeding fc.
REAL_MODELS = {"final_mnist_cnn.ts": (5, "Relu"), "new_final_mnist_cnn.ts": (10, "Reshape")}


@pytest.fixture(scope="module")
def mnist():
    """The shipped sample, preprocessed as the models expect: x (1000, 1, 28, 28) float32, y."""
    data = load_data("sample", preprocess=MNIST, samples=None)
    return np.concatenate(list(data.batches(len(data)))), data.y


def torch_outputs(path: Path, x: np.ndarray) -> tuple:
    """A plain torch run of a real TorchScript model: its tuple of outputs as arrays."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        model = torch.jit.load(str(path)).eval()
        return tuple(o.numpy() for o in model(torch.from_numpy(x)))


def assert_same_logits(got: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_the_fixtures_keep_their_licence_and_source():
    licence = (REAL / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Shafwan Adhi Dwi Nugraha" in licence
    readme = (REAL / "README.md").read_text()
    assert "ShafwanAdhi/mnist-cnn-torchscript-inference-api" in readme
    assert all((REAL / name).is_file() and name in readme for name in REAL_MODELS)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_a_real_model_returning_a_tuple_is_split_at_its_feature_layer(name, mnist, tmp_path):
    x = mnist[0][:200]
    reference = torch_outputs(REAL / name, x)
    assert len(reference) == 4  # (logits, three activations)

    file = identify(REAL / name)
    assert file.kind == "torchscript"
    graph = open_model(file, x.shape[1:], tmp_path)
    assert graph.output_kind == "logits"
    cut = cut_at(graph, None)
    units, op = REAL_MODELS[name]
    assert cut.default and cut.op == op

    features, logits = cut.trunk(x)
    assert features.shape == (len(x), units)
    assert_same_logits(logits, reference[0])  # output 0 of the tuple is the logits
    assert_same_logits(cut.head_runner(features)[0], reference[0])
    assert cut.affine is not None
    assert_same_logits(cut.affine(features), reference[0])

    # the activations the model also returns are ordinary layers: a cut there reproduces the logits too
    layers = graph.layers()
    assert [lay.name for lay in layers if lay.default] == [cut.layer]
    assert len(layers) >= 4
    for lay in layers:
        part = cut_at(graph, lay.name)
        features, logits = part.trunk(x[:20])
        assert features.shape[1:] == tuple(lay.shape), lay
        assert_same_logits(part.head_runner(features)[0], reference[0][:20])


@pytest.mark.parametrize("name", REAL_MODELS)
def test_clean_accuracy_is_the_accuracy_of_a_plain_torch_run(name, mnist):
    x, y = mnist
    plain = float(np.mean(torch_outputs(REAL / name, x)[0].argmax(1) == y))
    card = audit(REAL / name, "sample", samples=None, preprocess=MNIST)
    assert card["samples"] == len(x) == 1000
    assert card["clean_accuracy"] == pytest.approx(plain, abs=1e-12)
    assert card["clean_accuracy"] > 0.8  # trained models (about 92% and 87% on MNIST test images)
    assert card["layer"]["units"] == REAL_MODELS[name][0] and card["model"]["format"] == "torchscript"
    assert card["warnings"] == []


def test_a_real_model_fed_without_its_normalization_is_warned_about_and_the_preset_named():
    # As a new user runs it: no --preprocess, so [0, 1] pixels. Its accuracy falls to about half, well above
    # chance, but far below how often the labels agree with their pixel and patch neighbours' vote.
    card = audit(REAL / "final_mnist_cnn.ts", "sample", samples=None)
    assert 0.3 < card["clean_accuracy"] < 0.7
    (advice,) = card["warnings"]
    assert "far below how often the labels agree with their neighbours' vote" in advice
    assert "--preprocess mnist gives 0.9" in advice


# ---- the layouts public ONNX files come in, rebuilt from a real model's weights ---------------------------------

def _export_onnx(module, example, path: Path, outputs=("logits",), dynamic=True) -> Path:
    import torch

    names = list(outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["input", *names]} if dynamic else None)
    return path


def _eager_twin(name: str = "final_mnist_cnn.ts"):
    """The real model rebuilt as an eager module with its weights (its layer types and hyper-parameters read off
    the TorchScript code: tracing through a ScriptModule inside a wrapper is not supported). Returns the
    module; its `features(x)` gives the feature layer and `forward` the logits."""
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = torch.jit.load(str(REAL / name)).state_dict()

    class Final(nn.Module):  # final_mnist_cnn: conv -> relu -> pool -> view(-1, 980) -> fc1 -> relu -> fc2
        def __init__(self):
            super().__init__()
            self.conv, self.pool = nn.Conv2d(1, 5, 3, padding=1), nn.MaxPool2d(2)
            self.fc1, self.fc2 = nn.Linear(980, 5), nn.Linear(5, 10)

        def features(self, x):
            return torch.relu(self.fc1(self.pool(torch.relu(self.conv(x))).reshape(-1, 980)))

        def forward(self, x):
            return self.fc2(self.features(x))

    class NewFinal(nn.Module):  # new_final_mnist_cnn: 2 convs -> pool -> global average -> fc
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 10, 3, padding=1), nn.Conv2d(10, 10, 3, padding=1)
            self.pool, self.gap, self.fc = nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Linear(10, 10)

        def features(self, x):
            return self.gap(self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x)))))).flatten(1)

        def forward(self, x):
            return self.fc(self.features(x))

    model = (Final if name == "final_mnist_cnn.ts" else NewFinal)()
    model.load_state_dict(state)
    return model.eval()


def _wrap(forward, name: str = "final_mnist_cnn.ts"):
    """The real model's eager twin with a different input or output, as public ONNX files have them."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = _eager_twin(name)

        def forward(self, x):
            return forward(self.model, x)

    return Wrapper()


def _real(name: str):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(REAL / name)).eval()


def _plain_accuracy(mnist) -> float:
    x, y = mnist
    return float(np.mean(torch_outputs(REAL / "final_mnist_cnn.ts", x)[0].argmax(1) == y))


def test_onnx_with_weights_in_an_external_data_file(mnist, tmp_path):
    import torch

    exported = _export_onnx(_wrap(lambda m, x: m(x)), torch.zeros(2, 1, 28, 28), tmp_path / "plain.onnx")
    folder = tmp_path / "external"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(onnx.load(str(exported)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").stat().st_size > 20_000 > path.stat().st_size  # the weights are beside it

    card = audit(path, "sample", samples=None, preprocess=MNIST)
    assert card["clean_accuracy"] == pytest.approx(_plain_accuracy(mnist), abs=1e-12)
    assert card["layer"]["units"] == 5 and card["model"]["format"] == "onnx"

    # the .onnx copied without its side file: a clear error naming the missing file
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(path, alone / "model.onnx")
    with pytest.raises(GenauditError, match="weights.bin"):
        open_model(identify(alone / "model.onnx"), None, tmp_path)


def test_onnx_with_input_784x1_and_batch_fixed_to_1(mnist, tmp_path):
    import torch

    module = _wrap(lambda m, x: m(x.reshape(1, 1, 28, 28)))  # the graph hard-codes batch 1
    path = _export_onnx(module, torch.zeros(1, 784, 1), tmp_path / "flat.onnx", dynamic=False)
    declared = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert declared == [1, 784, 1]

    x = mnist[0][:50]
    graph = open_model(identify(path), None, tmp_path)
    assert graph.input_shape == (784, 1)
    assert input_layout(graph.input_shape, (1, 28, 28)) == "flat"  # flattened, then given the model's shape
    cut = cut_at(graph, None)
    features, logits = cut.trunk(x.reshape(len(x), 784, 1))  # 50 samples through a batch-1 graph
    assert_same_logits(logits, torch_outputs(REAL / "final_mnist_cnn.ts", x)[0])
    assert_same_logits(cut.head_runner(features)[0], logits)

    card = audit(path, "sample", samples=None, preprocess=MNIST)
    assert card["model"]["input_shape"] == [784, 1]
    assert card["clean_accuracy"] == pytest.approx(_plain_accuracy(mnist), abs=1e-12)


def test_onnx_with_channels_last_grayscale_input(mnist, tmp_path):
    """N x 28 x 28 x 1 with a Transpose inside (TensorFlow style): for one channel, NCHW data reshaped to NHWC
    is the same tensor, so the audit runs end to end."""
    import torch

    module = _wrap(lambda m, x: m(x.permute(0, 3, 1, 2)))
    path = _export_onnx(module, torch.zeros(2, 28, 28, 1), tmp_path / "nhwc.onnx")
    assert "Transpose" in {n.op_type for n in onnx.load(str(path)).graph.node}

    x = mnist[0][:50]
    graph = open_model(identify(path), None, tmp_path)
    assert graph.input_shape == (28, 28, 1)
    cut = cut_at(graph, None)
    features, logits = cut.trunk(x.transpose(0, 2, 3, 1))
    assert_same_logits(logits, torch_outputs(REAL / "final_mnist_cnn.ts", x)[0])
    assert_same_logits(cut.head_runner(features)[0], logits)

    card = audit(path, "sample", samples=None, preprocess=MNIST)
    assert card["clean_accuracy"] == pytest.approx(_plain_accuracy(mnist), abs=1e-12)


def test_onnx_with_channels_last_rgb_input(tmp_path):
    """N x 32 x 32 x 3: the split works when fed channels-last arrays, and the data (stored channels-first) is
    transposed to channels-last for it (see tests/test_inputs_outputs.py for the audit end to end)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class NHWC(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2)
            self.fc = nn.Linear(4 * 15 * 15, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x.permute(0, 3, 1, 2))).flatten(1))

    model = NHWC().eval()
    path = _export_onnx(model, torch.zeros(2, 32, 32, 3), tmp_path / "rgb_nhwc.onnx")
    graph = open_model(identify(path), None, tmp_path)
    assert graph.input_shape == (32, 32, 3)
    cut = cut_at(graph, None)
    x = np.random.default_rng(0).normal(size=(6, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    features, logits = cut.trunk(x)
    assert features.shape == (6, 900)
    assert_same_logits(logits, reference)
    assert_same_logits(cut.head_runner(features)[0], reference)
    assert input_layout(graph.input_shape, (3, 32, 32)) == "nhwc"


def test_onnx_returning_logits_and_features(mnist, tmp_path):
    """A (logits, features) tuple where output 1 is the feature layer itself, and the real model exported as
    is, with its four outputs: genaudit audits output 0."""
    import torch

    def logits_and_features(m, x):
        features = m.features(x)
        return m.fc(features), features

    module = _wrap(logits_and_features, "new_final_mnist_cnn.ts")
    pair = _export_onnx(module, torch.zeros(2, 1, 28, 28), tmp_path / "pair.onnx", outputs=("logits", "features"))
    # the TorchScript file itself exported as is: its four outputs (logits, three activations)
    four = _export_onnx(_real("new_final_mnist_cnn.ts"), torch.zeros(2, 1, 28, 28), tmp_path / "four.onnx",
                        outputs=("logits", "conv1", "conv2", "pool"))
    x, y = mnist
    reference = torch_outputs(REAL / "new_final_mnist_cnn.ts", x)[0]
    plain = float(np.mean(reference.argmax(1) == y))
    for path in (pair, four):
        graph = open_model(identify(path), None, tmp_path)
        assert [o.name for o in graph.model.graph.output][0] == "logits"
        cut = cut_at(graph, None)
        features, logits = cut.trunk(x[:100])
        assert features.shape == (100, 10)
        assert_same_logits(logits, reference[:100])
        assert_same_logits(cut.head_runner(features)[0], reference[:100])
        card = audit(path, "sample", samples=None, preprocess=MNIST)
        assert card["clean_accuracy"] == pytest.approx(plain, abs=1e-12)
        assert card["layer"]["units"] == 10
