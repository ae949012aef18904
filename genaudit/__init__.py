"""genaudit: predict how well a trained classifier generalizes, without a held-out set.

    import genaudit
    card = genaudit.audit("model.onnx", "mnist")     # -> Scorecard (a dict; card.to_json())
    result = genaudit.compare(["a.onnx", "b.onnx"], "mnist")   # -> dict; result["selected"]
"""

from genaudit.version import __version__


def audit(*args, **kwargs):
    """Audit one model; see `genaudit.pipeline.audit` (imported lazily to keep `import genaudit` fast)."""
    from genaudit.pipeline import audit as _audit

    return _audit(*args, **kwargs)


def compare(*args, **kwargs):
    """Audit and rank a series of models; see `genaudit.comparison.compare`."""
    from genaudit.comparison import compare as _compare

    return _compare(*args, **kwargs)


__all__ = ["__version__", "audit", "compare"]
