"""Diagnostics: pure functions of a FeatureSet and the head, each declared beside its function as a
`Diagnostic` (genaudit.registry). None of them reruns the trunk, except the input-space probes, which by
definition rerun the whole model on a subsample.

`REGISTRY` lists them in the order the pipeline runs them and the report shows them; a diagnostic nested in
another's block (a dotted key) comes after it, and one that reads another's result (`Context.results`) says so in
its `needs` (the pipeline runs each kind in a lane of its own). Adding a diagnostic = one module + one entry here +
its test.
"""

from genaudit.diagnostics.ablation import DIAGNOSTIC as ABLATION
from genaudit.diagnostics.ablation import ablation
from genaudit.diagnostics.consistency import DIAGNOSTIC as CONSISTENCY
from genaudit.diagnostics.consistency import consistency
from genaudit.diagnostics.input_space import (
    AUGMENTATION,
    INPUT_NOISE,
    augmentation_agreement,
    input_noise_agreement,
)
from genaudit.diagnostics.magnitude import DIAGNOSTIC as MAGNITUDE
from genaudit.diagnostics.magnitude import magnitude, per_sample_magnitude
from genaudit.diagnostics.margins import DIAGNOSTIC as MARGINS
from genaudit.diagnostics.memorization import MEMORIZATION
from genaudit.diagnostics.neighbours import EARLY as NEIGHBOURS_EARLY
from genaudit.diagnostics.neighbours import FEATURES as NEIGHBOURS_FEATURES
from genaudit.diagnostics.neighbours import INPUT as NEIGHBOURS_INPUT
from genaudit.diagnostics.neighbours import PATCHES as NEIGHBOURS_PATCHES
from genaudit.diagnostics.noise import DIAGNOSTIC as NOISE
from genaudit.diagnostics.noise import noise_robustness
from genaudit.diagnostics.perplexity import (
    NODES,
    PERPLEXITY,
    nodes_as_classifiers,
    perplexity,
)
from genaudit.diagnostics.selectivity import DIAGNOSTIC as SELECTIVITY
from genaudit.diagnostics.selectivity import selectivity
from genaudit.diagnostics.selectivity_extra import (
    IMPORTANCE,
    MUTUAL_INFORMATION,
    ORDERED_ABLATION,
    importance_correlation,
    mi_selectivity,
    selectivity_ordered_ablation,
    single_unit_importance,
)
from genaudit.diagnostics.similarity import DRIFT, linear_cka, svcca
from genaudit.diagnostics.steadiness import DIAGNOSTIC as STEADINESS
from genaudit.diagnostics.steadiness import steadiness

REGISTRY = [
    NEIGHBOURS_INPUT, NEIGHBOURS_PATCHES, NEIGHBOURS_EARLY, NEIGHBOURS_FEATURES, ABLATION, NOISE, SELECTIVITY,
    MUTUAL_INFORMATION, ORDERED_ABLATION, IMPORTANCE, STEADINESS, CONSISTENCY, MAGNITUDE, PERPLEXITY, NODES,
    MARGINS, MEMORIZATION, INPUT_NOISE, AUGMENTATION,
]


def of_kind(*kinds: str) -> list:
    """The registered diagnostics of these kinds, in registry order."""
    return [d for d in REGISTRY if d.kind in kinds]


__all__ = [
    "DRIFT",
    "REGISTRY", "ablation", "augmentation_agreement", "consistency", "importance_correlation",
    "input_noise_agreement", "linear_cka", "magnitude", "mi_selectivity", "nodes_as_classifiers", "noise_robustness",
    "of_kind", "per_sample_magnitude", "perplexity", "selectivity", "selectivity_ordered_ablation",
    "single_unit_importance", "steadiness", "svcca",
]
