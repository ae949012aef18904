"""The shipped sample models: real MNIST classifiers, one trained on random labels (it memorized)."""

from __future__ import annotations

import pytest

from conftest import SAMPLE_MODELS
from genaudit import audit


def label_free(name: str, fmt: str = ".onnx") -> dict:
    return audit(SAMPLE_MODELS / f"{name}{fmt}", "sample", use_labels=False)


def test_a_memorizing_model_scores_worse_than_a_generalizing_one():
    clean, memorizing = label_free("mlp_clean"), label_free("mlp_random")
    # Morcos et al.: networks that memorize depend on fewer directions, so ablation hurts them sooner.
    assert memorizing["diagnostics"]["ablation"]["auc"] < clean["diagnostics"]["ablation"]["auc"] - 0.03


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
        card = audit(SAMPLE_MODELS / variant, "sample", use_labels=False)
        assert card["diagnostics"]["ablation"]["auc"] == pytest.approx(plain["diagnostics"]["ablation"]["auc"],
                                                                       abs=1e-4), variant
