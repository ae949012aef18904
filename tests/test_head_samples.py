"""At a layer whose head is not one affine map (a conv layer), the head-evaluated curves run on a seeded,
stratified subsample of --head-samples samples, and the random-order ablation on a nested subsample of at most
half as many; a closed-form head always uses every sample."""

from __future__ import annotations

import numpy as np
import pytest

import genaudit
from conftest import SAMPLE_MODELS
from genaudit.scorecard import lookup

CNN = SAMPLE_MODELS / "cnn_clean.onnx"
CONV = "/relu2/Relu_output_0"
HEAD_BLOCKS = ["ablation", "noise", "selectivity.ordered_ablation", "selectivity.importance_correlation"]


def samples_used(card) -> list:
    return [lookup(card, f"{block}.samples") for block in HEAD_BLOCKS]


def test_a_closed_form_head_uses_every_sample():
    card = genaudit.audit(CNN, "sample", samples=300, head_samples=50)  # default layer: an affine head
    assert samples_used(card) == [300] * 4 and card["options"]["head_samples"] == 50


def test_a_conv_head_uses_the_stratified_subsample():
    card = genaudit.audit(CNN, "sample", samples=300, layer=CONV, head_samples=120)
    assert samples_used(card) == [60, 120, 120, 120]  # the ablation on half of them
    again = genaudit.audit(CNN, "sample", samples=300, layer=CONV, head_samples=120)
    assert again.to_json() == card.to_json()  # seeded: the same subsample every time


def test_a_subsample_covering_every_sample_changes_nothing():
    every = genaudit.audit(CNN, "sample", samples=200, layer=CONV, head_samples=0)
    same = genaudit.audit(CNN, "sample", samples=200, layer=CONV, head_samples=400)  # the ablation's half too
    assert samples_used(every) == samples_used(same) == [200] * 4
    assert every["diagnostics"] == same["diagnostics"] and every["estimate"] == same["estimate"]


@pytest.mark.parametrize("path", ["ablation.auc", "noise.auc"])
def test_the_subsampled_curves_estimate_the_all_sample_ones(path):
    """Measured on the sample CNN's conv layer: 500 of 1,000 samples move these AUCs by well under their spread
    over unit orders (docs: ≤ 0.007 over four seeds)."""
    full = genaudit.audit(CNN, "sample", samples=1000, layer=CONV, head_samples=0)
    half = genaudit.audit(CNN, "sample", samples=1000, layer=CONV, head_samples=500)
    assert abs(lookup(half, path) - lookup(full, path)) < 0.02
    assert np.isfinite(lookup(half, path))


@pytest.mark.parametrize("fmt", ["table", "markdown", "html"])
def test_every_report_says_when_the_head_curves_were_subsampled(fmt):
    from genaudit.render import renderer_class

    def text(card) -> str:  # the terminal panel wraps lines inside its box
        return " ".join(renderer_class(fmt).text("report", card).replace("│", " ").split())

    sub = genaudit.audit(CNN, "sample", samples=300, layer=CONV, head_samples=120)
    whole = genaudit.audit(CNN, "sample", samples=300, layer=CONV, head_samples=0)
    assert "head curves on 120 of them, ablation on 60 (--head-samples)" in text(sub)
    assert "head curves" not in text(whole)


def test_the_ablation_alone_on_a_nested_half_when_every_sample_fits_the_head_subsample():
    card = genaudit.audit(CNN, "sample", samples=300, layer=CONV)  # default --head-samples 500: ablation on 250
    assert samples_used(card) == [250, 300, 300, 300]


def test_the_ablation_subsample_is_nested_in_the_head_subsample_and_stratified_by_prediction():
    from genaudit.data import stratified_indices
    from genaudit.diagnostics._head import ablation_view, head_view
    from genaudit.options import AuditOptions, DataOptions, build
    from genaudit.pipeline import trunk_pass
    from genaudit.registry import Context

    data_opts, opts = build({"samples": 300, "layer": CONV, "head_samples": 120}, DataOptions, AuditOptions)
    dataset = data_opts.load("sample", opts.seed)
    done = trunk_pass(CNN, dataset, opts)
    context = Context(done.fs, opts, done.cut)
    fs, view, part = context.fs, head_view(context), ablation_view(context)
    rows = stratified_indices(len(fs.predictions), fs.predictions, 120, opts.seed)
    nested = rows[stratified_indices(120, fs.predictions[rows], 60, opts.seed)]
    np.testing.assert_array_equal(part.features, fs.features[nested])
    np.testing.assert_array_equal(part.labels, fs.labels[nested])
    assert len(view.predictions) == 120 and ablation_view(context.without_labels()).features is part.features
