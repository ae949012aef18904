"""The installed package carries every data file the code reads (a non-editable install only copies what
pyproject.toml's package-data names: the estimator's coefficients were once left out)."""

import fnmatch
import os
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
    """Users who only audit ONNX files install genaudit without torch (it is the [torch] extra), and none is ever
    loaded: the audit of an .onnx file runs on onnxruntime and numpy alone."""
    code = ("import sys, genaudit; genaudit.audit(sys.argv[1], 'sample', samples=100); "
            "print(sorted(m for m in ('torch', 'torchvision', 'ray', 'lightning', 'mlflow') if m in sys.modules))")
    model = str(ROOT / "sample_models" / "mlp_clean.onnx")
    out = subprocess.run([sys.executable, "-c", code, model], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_command_line_parses_its_options_without_pydantic():
    """typer 0.29 coerces every option through pydantic (importing it and building an adapter per option: 0.26 s of
    a 1.5 s `genaudit score`, docs/performance.md); pyproject.toml caps typer below it. A command run in process
    must not load pydantic."""
    code = ("import sys; from genaudit.cli import app\n"
            "try:\n    app(['explain', 'estimate'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print('pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


# torch is an optional extra: a CI job that audits ONNX files installs `pip install genaudit` (about 0.5 GB)
# instead of torch's CUDA wheels (6 GB). A missing torch is simulated by blocking its import in a subprocess.
WITHOUT_TORCH = ("import sys; sys.modules.update(dict.fromkeys(('torch', 'torchvision'), None)); "
                 "sys.argv = ['genaudit', *sys.argv[1:]]; from genaudit.cli import main; main()")


def _without_torch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENAUDIT_CACHE": str(tmp_path / "cache")}  # no cached conversion
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=120)


def test_torch_is_an_optional_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert not {"torch", "torchvision", "onnxscript", "lightning", "ray"} & set(names)
    extras = project["optional-dependencies"]
    assert "torch>=2.4,<=2.14.1" in extras["torch"] and "torchvision>=0.19,<=0.29.1" in extras["torch"]
    assert any(d.startswith("onnxscript") for d in extras["torch"])  # the .pt2 converter
    assert "torch" in extras["test"][-1] and "genaudit[torch]" in extras["lightning"]  # .ci/run installs [test]


def test_an_onnx_audit_runs_without_torch(tmp_path):
    done = _without_torch(["score", "sample_models/mlp_clean.onnx", "--data", "sample", "--samples", "200",
                           "--format", "json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and '"estimate"' in done.stdout


def test_a_torch_file_without_torch_names_the_extra(tmp_path):
    for args in (["score", "sample_models/mlp_clean.pt", "--data", "sample", "--samples", "200"],
                 ["score", "sample_models/mlp_clean.pt2", "--data", "sample", "--samples", "200"],
                 ["layers", "sample_models/cnn_clean.pt2"]):
        done = _without_torch(args, tmp_path)
        message = " ".join(done.stderr.split())  # the terminal wraps lines
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert "pip install 'genaudit[torch]'" in message and args[1] in message, message


def test_what_else_needs_torch_names_the_extra(tmp_path):
    """--resize (torch's interpolation) and the first read of a named data set (torchvision) without torch."""
    for args, named in ((["score", "sample_models/mlp_clean.onnx", "--data", "sample", "--resize", "14,14"],
                         "--resize"),
                        (["score", "sample_models/mlp_clean.onnx", "--data", "mnist", "--data-dir",
                          str(tmp_path / "data")], "mnist")):
        done = _without_torch(args, tmp_path)
        message = " ".join(done.stderr.split())
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr)
        assert "pip install 'genaudit[torch]'" in message and named in message, message
