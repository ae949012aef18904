"""The shipped sample models: real MNIST classifiers, one trained on random labels (it memorized)."""

from __future__ import annotations

import pytest

from conftest import SAMPLE_MODELS
from genaudit import audit


def label_free(name: str, fmt: str = ".onnx") -> dict:
    return audit(SAMPLE_MODELS / f"{name}{fmt}", "sample", labels=False)


@pytest.fixture(scope="module")
def clean_and_memorizing():
    return [audit(SAMPLE_MODELS / f"{name}.onnx", "sample", labels=False, probes=300)["diagnostics"]
            for name in ("mlp_clean", "mlp_random")]


@pytest.mark.parametrize("path, better, margin", [
    ("ablation.auc", "higher", 0.03),          # Morcos: memorizing networks rely on fewer directions
    ("noise.auc", "higher", 0.0),              # Morcos: ... and are less robust to noise in the units
    ("steadiness.ratio", "lower", 0.1),        # NSR: larger intra-class variance
    ("consistency.value", "lower", 0.3),       # NSR lemma / PGDL: less consistent class clusters
    ("nodes.accuracy", "higher", 0.2),         # Davel: nodes carry less class information
    ("input.noise.auc", "higher", 0.03),       # PGDL: predictions less stable around the training points
    ("input.augmentation.mean", "higher", 0.3),
])
def test_a_memorizing_model_scores_worse_than_a_generalizing_one(clean_and_memorizing, path, better, margin):
    def get(diag):
        for key in path.split("."):
            diag = diag[key]
        return diag

    clean, memorizing = (get(d) for d in clean_and_memorizing)
    if better == "higher":
        assert memorizing < clean - margin
    else:
        assert memorizing > clean + margin


def test_the_shipped_formats_agree():
    cards = [label_free("cnn_clean", fmt) for fmt in (".onnx", ".pt", ".traced.pt", ".pt2")]
    for card in cards[1:]:
        for metric in ("ablation", "noise"):
            assert card["diagnostics"][metric]["auc"] == pytest.approx(cards[0]["diagnostics"][metric]["auc"],
                                                                       abs=1e-4)


def test_with_labels_the_clean_model_is_accurate_on_its_training_sample():
    card = audit(SAMPLE_MODELS / "cnn_clean.onnx", "sample")
    assert card["clean_accuracy"] > 0.95
    assert card["diagnostics"]["ablation"]["curve"]["accuracy"][0] == pytest.approx(card["clean_accuracy"])


def test_the_shipped_pickled_module_and_state_dict_are_refused():
    from genaudit.errors import GenauditError
    from genaudit.models import identify

    with pytest.raises(GenauditError, match="never unpickles"):
        identify(SAMPLE_MODELS / "mlp_clean.pickled.pth")  # references __main__.MLP, as real ones do
    with pytest.raises(GenauditError, match="only weights"):
        identify(SAMPLE_MODELS / "mlp_clean.state_dict.pth")


def test_fixed_batch_and_probability_exports_match_the_plain_model():
    plain = label_free("mlp_clean")
    for variant in ("mlp_clean.fixedbatch.onnx", "mlp_softmax.onnx", "mlp_softmax.pt"):
        card = audit(SAMPLE_MODELS / variant, "sample", labels=False)
        assert card["diagnostics"]["ablation"]["auc"] == pytest.approx(plain["diagnostics"]["ablation"]["auc"],
                                                                       abs=1e-4), variant
