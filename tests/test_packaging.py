"""The installed package carries every data file the code reads (a non-editable install only copies what
pyproject.toml's package-data names: the estimator's coefficients were once left out)."""

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_is_declared_as_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["genaudit"]
    package = ROOT / "genaudit"
    data = [p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "estimate_model.json" in data and "sample_data/mnist_sample.npz" in data
    missing = [f for f in data if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert missing == [], f"not in [tool.setuptools.package-data]: {missing}"


def test_import_stays_light():
    """`import genaudit` and its version pull in none of the heavy libraries (they load where they are used)."""
    code = ("import sys, genaudit; genaudit.__version__; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'scipy', 'matplotlib', 'ray', 'lightning', "
            "'mlflow', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_onnx_audit_never_imports_torch():
    """Users who only audit ONNX files can install the small CPU-only torch (README), or none is ever loaded:
    the audit of an .onnx file runs on onnxruntime and numpy alone."""
    code = ("import sys, genaudit; genaudit.audit(sys.argv[1], 'sample', samples=100); "
            "print(sorted(m for m in ('torch', 'torchvision', 'ray', 'lightning', 'mlflow') if m in sys.modules))")
    model = str(ROOT / "sample_models" / "mlp_clean.onnx")
    out = subprocess.run([sys.executable, "-c", code, model], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
