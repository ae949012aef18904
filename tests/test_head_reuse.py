"""The head-evaluated diagnostics evaluate each distinct variant of the features once per audit (`MemoHead`), and
a labelled audit's label-free score rerun compares the predictions already made instead of rerunning the head.
The remembered predictions must be the ones a fresh evaluation gives, and every value what the plain definition
gives: checked on the sample CNN's conv layer (a head onnxruntime runs) and its default layer (a closed-form
head)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import genaudit
from conftest import SAMPLE_MODELS
from genaudit.diagnostics import of_kind
from genaudit.diagnostics._head import MemoHead, ablation_view, head_view, memo_head
from genaudit.diagnostics.ablation import ablation, ablation_masks
from genaudit.diagnostics.noise import noise_robustness
from genaudit.diagnostics.selectivity_extra import selectivity_ordered_ablation, single_unit_importance
from genaudit.options import AuditOptions, DataOptions, build
from genaudit.pipeline import score_inputs, trunk_pass
from genaudit.registry import Context, run

CNN = SAMPLE_MODELS / "cnn_clean.onnx"
CONV = "/relu2/Relu_output_0"


class CountingRunner:
    """The head's onnxruntime runner, counting the rows (feature copies) it is given."""

    def __init__(self, runner) -> None:
        self.runner, self.rows = runner, 0

    def __call__(self, x):
        self.rows += len(x)
        return self.runner(x)


def audit_context(samples: int = 300, **options) -> tuple[Context, CountingRunner]:
    """A labelled audit's context after the trunk pass, its head runner counting rows."""
    data_opts, opts = build({"samples": samples, **options}, DataOptions, AuditOptions)
    dataset = data_opts.load("sample", opts.seed)
    done = trunk_pass(CNN, dataset, opts)
    counter = CountingRunner(done.cut.head_runner)
    done.cut.head_runner = counter
    return Context(done.fs, opts, done.cut, dataset, done.layout, done.spaces), counter


def as_json(value) -> str:
    return json.dumps(value, sort_keys=True)


def test_remembered_predictions_equal_a_fresh_evaluation_of_each_mask():
    context, _ = audit_context(samples=200, layer=CONV)
    fs, head = context.fs, context.cut.head
    rng = np.random.default_rng(0)
    orders = np.stack([rng.permutation(fs.units) for _ in range(3)])
    masks = ablation_masks(fs.units, np.linspace(0, 1, 7), orders)[:, :, None, None]
    memo = MemoHead(head)
    first = memo.masked_predictions(fs.features, masks[:12])
    both = memo.masked_predictions(fs.features, masks)  # the first 12 remembered, the rest evaluated now
    assert memo.evaluated == len(np.unique(masks.reshape(len(masks), -1), axis=0))
    np.testing.assert_array_equal(both[:12], first)
    for mask, predicted in zip(masks, both):
        np.testing.assert_array_equal(predicted, head(fs.features * mask).argmax(axis=1))


@pytest.mark.parametrize("layer", [CONV, None])
def test_the_head_diagnostics_give_what_the_plain_definitions_give(layer):
    """Through the registry (one MemoHead for the audit) and each pure function with the bare head: the same
    values bit for bit; at the conv layer the shared head evaluates fewer feature copies."""
    context, counter = audit_context(layer=layer, head_samples=120)
    shared = run(of_kind("layer", "head"), context)
    shared_rows = counter.rows
    counter.rows = 0

    o, head, view = context.opts, context.cut.head, head_view(context)
    si = np.asarray(shared["selectivity"]["per_unit"])
    units = np.sort(np.random.default_rng(o.seed).choice(context.fs.units, size=min(context.fs.units,
                                                                                     o.importance_units),
                                                       replace=False))
    plain_ablation = ablation(head, ablation_view(context), levels=o.ablation_levels, repeats=o.repeats, seed=o.seed)
    plain_noise = noise_robustness(head, view, levels=o.noise_levels, max_scale=o.noise_max, seed=o.seed)
    plain_ordered = selectivity_ordered_ablation(head, view, si, levels=o.ablation_levels)
    plain_importance = single_unit_importance(head, view, units)
    assert as_json(shared["ablation"]) == as_json(plain_ablation)
    assert as_json(shared["noise"]) == as_json(plain_noise)
    assert as_json(shared["selectivity"]["ordered_ablation"]) == as_json(plain_ordered)
    from genaudit.diagnostics.selectivity_extra import importance_correlation

    expected = importance_correlation(si[units], plain_importance)
    got = shared["selectivity"]["importance_correlation"]
    assert (got["spearman"], got["p_value"]) == (expected["spearman"], expected["p_value"])
    if layer == CONV:
        # each distinct mask once per sample set: the random-order ablation's masks on its 60 samples; on the
        # view's 120, those of the ordered ablation and the importance (every unit kept: each curve's first point,
        # the importance's clean accuracy and noise at scale 0; every unit zeroed; single units the importance
        # and a curve's first step both zero), and the noise levels above 0
        d, fractions = context.fs.units, np.linspace(0, 1, o.ablation_levels)
        rng = np.random.default_rng(o.seed)
        orders = np.stack([rng.permutation(d) for _ in range(o.repeats)])
        ordered = np.stack([np.argsort(-si, kind="stable"), np.argsort(si, kind="stable")])
        masks = np.concatenate([ablation_masks(d, fractions, ordered), np.ones((1, d), np.float32),
                                ablation_masks(d, np.array([1 / d]), (units[:, None] + np.arange(d)) % d)])
        random_orders = len(np.unique(ablation_masks(d, fractions, orders), axis=0))
        assert view.features.shape[0] == 120 and ablation_view(context).features.shape[0] == 60
        assert shared_rows == 60 * random_orders + 120 * (len(np.unique(masks, axis=0)) + o.noise_levels - 1)
        assert shared_rows < counter.rows
    else:
        assert shared_rows == counter.rows == 0  # a closed-form head never runs onnxruntime


def test_the_label_free_score_rerun_at_a_closed_form_head_evaluates_no_variant():
    context, _ = audit_context()
    run(of_kind("layer", "head"), context)
    head = memo_head(context)
    evaluated = head.evaluated
    rerun = score_inputs(context)
    assert head.evaluated == evaluated
    fresh = run([d for d in of_kind("layer", "head") if d.top in rerun], Context(context.fs.without_labels(),
                                                                                 context.opts, context.cut))
    assert as_json(rerun) == as_json(fresh)


def test_a_conv_layer_audit_keeps_its_values_with_the_shared_head():
    """The whole audit at the conv layer with labels: the score (from the label-free rerun) is the label-free
    audit's, as at every layer."""
    with_labels = genaudit.audit(CNN, "sample", samples=300, layer=CONV, head_samples=0)
    without = genaudit.audit(CNN, "sample", samples=300, layer=CONV, head_samples=0, labels=False)
    assert with_labels["label_mode"] == "labels"
    assert with_labels["score"]["value"] == without["score"]["value"]
    assert with_labels["diagnostics"]["ablation"] != without["diagnostics"]["ablation"]  # labels vs predictions


def test_the_label_free_score_rerun_at_a_conv_layer_evaluates_no_variant():
    """The head's subsample is stratified by the clean predictions, so the labelled diagnostics and the label-free
    rerun measure on the same samples: the rerun's ablation reads the predictions already made."""
    context, counter = audit_context(layer=CONV, head_samples=120)
    run(of_kind("layer", "head"), context)
    rows = counter.rows
    rerun = score_inputs(context)
    assert counter.rows == rows
    fresh = run([d for d in of_kind("layer", "head") if d.top in rerun], Context(context.fs.without_labels(),
                                                                                 context.opts, context.cut))
    assert counter.rows > rows and as_json(rerun) == as_json(fresh)
    assert head_view(context).labels is not None and head_view(context.without_labels()).labels is None


def test_the_subsample_is_the_same_with_or_without_labels():
    from genaudit.data import stratified_indices

    context, _ = audit_context(layer=CONV, head_samples=120)
    view, free = head_view(context), head_view(context.without_labels())
    rows = stratified_indices(len(context.fs.predictions), context.fs.predictions, 120, context.opts.seed)
    assert view.features is free.features
    np.testing.assert_array_equal(view.features, context.fs.features[rows])
    np.testing.assert_array_equal(view.labels, context.fs.labels[rows])
    np.testing.assert_array_equal(free.reference, context.fs.predictions[rows])


def test_a_subsampled_conv_audit_scores_as_its_label_free_audit():
    with_labels = genaudit.audit(CNN, "sample", samples=300, layer=CONV, head_samples=120)
    without = genaudit.audit(CNN, "sample", samples=300, layer=CONV, head_samples=120, labels=False)
    assert with_labels["diagnostics"]["noise"]["samples"] == 120
    assert with_labels["score"]["value"] == without["score"]["value"]
