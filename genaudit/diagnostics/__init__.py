"""Diagnostics: pure functions of a FeatureSet and the head. None of them reruns the trunk."""

from genaudit.diagnostics.ablation import ablation
from genaudit.diagnostics.noise import noise_robustness
from genaudit.diagnostics.selectivity import selectivity

__all__ = ["ablation", "noise_robustness", "selectivity"]
