"""Diagnostics: pure functions of a FeatureSet and the head. None of them reruns the trunk (except the
input-space probes, which by definition rerun the whole model on a subsample)."""

from genaudit.diagnostics.ablation import ablation
from genaudit.diagnostics.consistency import consistency
from genaudit.diagnostics.input_space import augmentation_agreement, input_noise_agreement
from genaudit.diagnostics.magnitude import magnitude, per_sample_magnitude
from genaudit.diagnostics.noise import noise_robustness
from genaudit.diagnostics.perplexity import nodes_as_classifiers, perplexity
from genaudit.diagnostics.selectivity import selectivity
from genaudit.diagnostics.selectivity_extra import (
    importance_correlation, mi_selectivity, selectivity_ordered_ablation, single_unit_importance,
)
from genaudit.diagnostics.similarity import linear_cka, svcca
from genaudit.diagnostics.steadiness import steadiness

__all__ = [
    "ablation", "augmentation_agreement", "consistency", "importance_correlation", "input_noise_agreement",
    "linear_cka", "magnitude", "mi_selectivity", "nodes_as_classifiers", "noise_robustness",
    "per_sample_magnitude", "perplexity", "selectivity", "selectivity_ordered_ablation", "single_unit_importance",
    "steadiness", "svcca",
]
