"""genaudit: predict how well a trained classifier generalizes, without a held-out set.

    import genaudit
    card = genaudit.audit("model.onnx", "mnist", labels=True, samples=2000)   # -> Scorecard (a dict)
    result = genaudit.compare(["a.onnx", "b.onnx"], "mnist")                   # -> dict; result["selected"]

The keyword options are those of the command line, with the same names (see `genaudit.options`).
`import genaudit` stays light: the pipeline (and numpy, onnxruntime) load when `audit` or `compare` is first used.
"""

from genaudit.version import __version__

_LAZY = {"audit": "genaudit.pipeline", "compare": "genaudit.comparison", "validate": "genaudit.validation"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genaudit' has no attribute '{name}'")


__all__ = ["__version__", "audit", "compare", "validate"]
