"""On a machine with onnxruntime's CUDA build and a GPU: the audit on the GPU reports the numbers of the audit on
the CPU within the documented tolerance (fp32 kernels sum in another order; an argmax near a tie may flip).
This machine has no GPU: the test runs where there is one (the provider choice and the refusal of --device
cuda without CUDA are tested in test_gates.py everywhere)."""

from __future__ import annotations

import pytest

import genaudit
from conftest import SAMPLE_MODELS
from genaudit.metrics import METRICS
from genaudit.scorecard import lookup

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                reason="needs onnxruntime's CUDA build and a GPU (pip install 'genaudit[gpu]')")

SAMPLES = 500


def within_tolerance(gpu: float, cpu: float) -> bool:
    """The documented CPU/GPU tolerance: 1e-3 relative, or two samples' worth of an accuracy (2/N)."""
    return abs(gpu - cpu) <= max(1e-3 * abs(cpu), 2 / SAMPLES)


@pytest.mark.parametrize("model", ["cnn_clean.onnx", "mlp_clean.onnx"])
def test_gpu_audit_matches_cpu(model):
    cpu = genaudit.audit(SAMPLE_MODELS / model, "sample", samples=SAMPLES, device="cpu")
    gpu = genaudit.audit(SAMPLE_MODELS / model, "sample", samples=SAMPLES, device="cuda")
    assert gpu["model"]["provider"] == "CUDAExecutionProvider" and cpu["model"]["provider"] == "CPUExecutionProvider"
    far = {m.name: (lookup(gpu, m.path), lookup(cpu, m.path)) for m in METRICS
           if lookup(cpu, m.path) is not None and not within_tolerance(lookup(gpu, m.path), lookup(cpu, m.path))}
    assert far == {}
