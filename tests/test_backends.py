"""Where a series of audits runs: local (in process or a pool) and Ray give the same documents; a failed model is
named and never loses the others' results. The Ray tests start a real local Ray instance (2 CPUs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import SAMPLE_MODELS, assert_user_error
from typer.testing import CliRunner

import genaudit
from genaudit.backends import run_tasks
from genaudit.cli import app
from genaudit.errors import GenauditError
from genaudit.options import RunOptions

ray = pytest.importorskip("ray")  # the [ray] extra; the test extra installs it

MODELS = [SAMPLE_MODELS / "mlp_clean.onnx", SAMPLE_MODELS / "mlp_random.onnx", SAMPLE_MODELS / "cnn_clean.onnx"]
OPTIONS = {"samples": 200, "order": "given"}


def without_timings(document: dict) -> dict:
    """A document minus what legitimately differs between two runs (the wall-clock timers)."""
    document = json.loads(json.dumps(document, default=str))
    for card in document.get("scorecards", []):
        card.pop("timings", None)
    return document


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    yield
    ray.shutdown()


@pytest.fixture()
def broken(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    return path


def square(model, factor):
    """A backend task for the unit tests (module level, so Ray and process pools can import it)."""
    if model.name == "fail":
        raise GenauditError("refused")
    return int(model.name) ** 2 * factor


@pytest.fixture()
def files(tmp_path):
    """Three 'model files' for `square`: 3, fail, 2 (the Ray backend checks that a model file exists)."""
    paths = [tmp_path / name for name in ("3", "fail", "2")]
    for path in paths:
        path.touch()
    return paths


def test_run_tasks_keeps_order_names_failures_and_reports_progress(files):
    seen = []
    results, failures = run_tasks(square, files, (10,), RunOptions(), lambda d, t: seen.append((d, t)))
    assert results == [90, None, 40]
    assert [(f.model, f.error) for f in failures] == [(str(files[1]), "refused")]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert run_tasks(square, files, (10,), RunOptions(jobs=2))[0] == results  # a local process pool


def test_run_options_are_checked_before_any_work(monkeypatch):
    with pytest.raises(GenauditError, match="'local' or 'ray'"):
        RunOptions(backend="dask").check()
    with pytest.raises(GenauditError, match="at least 1"):
        RunOptions(jobs=0).check()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(GenauditError, match=r"pip install 'genaudit\[ray\]'"):
        RunOptions(backend="ray").check()


def test_ray_tasks_match_local_and_keep_failures_apart(cluster, files, tmp_path):
    seen = []
    remote = run_tasks(square, files, (10,), RunOptions(backend="ray"), lambda d, t: seen.append(d))
    assert remote[0] == [90, None, 40]
    assert [f.error for f in remote[1]] == ["refused"]
    assert seen == [1, 2, 3]
    missing = run_tasks(square, [tmp_path / "7"], (10,), RunOptions(backend="ray"))[1]
    assert "not on the worker node" in missing[0].error  # a node without the checkpoints says so


def test_compare_on_ray_equals_local(cluster, broken):
    local = genaudit.compare([*MODELS, broken], "sample", **OPTIONS)
    remote = genaudit.compare([*MODELS, broken], "sample", backend="ray", **OPTIONS)
    assert without_timings(remote) == without_timings(local)
    assert remote["ranking"] == local["ranking"] and len(remote["scorecards"]) == 3
    assert [f["model"] for f in remote["failed"]] == [str(broken)]
    assert "not a readable model" in remote["failed"][0]["error"]


def test_validate_on_ray_equals_local(cluster):
    options = {"samples": 200, "holdout_samples": 200}
    local = genaudit.validate(MODELS, "sample", "sample", **options)
    remote = genaudit.validate(MODELS, "sample", "sample", backend="ray", **options)
    assert remote == local and remote["failed"] == []


def test_every_model_failing_is_a_user_error(broken):
    with pytest.raises(GenauditError, match="No model could be audited: .*broken.onnx"):
        genaudit.compare([broken], "sample", samples=200)


def test_cli_writes_the_others_and_exits_2_naming_the_failed_model(tmp_path, broken):
    out = tmp_path / "c.json"
    result = CliRunner().invoke(app, ["compare", str(MODELS[0]), str(broken), "--data", "sample", "--samples", "200",
                                      "--json", str(out)])
    assert result.exit_code == 2
    assert f"error: {broken}" in " ".join(result.output.split())
    document = json.loads(out.read_text())
    assert [r["model"] for r in document["models"]] == [str(MODELS[0])]
    assert document["failed"][0]["model"] == str(broken)


def test_cli_ray_backend_starts_its_own_instance(tmp_path):
    """What a user runs: the CLI starts a local Ray instance, audits, shuts it down; same JSON as local."""
    paths = [str(m) for m in MODELS[:2]]
    common = [*paths, "--data", "sample", "--samples", "200", "-f", "json"]
    local = subprocess.run([sys.executable, "-m", "genaudit", "compare", *common],
                           capture_output=True, text=True, check=True)
    remote = subprocess.run([sys.executable, "-m", "genaudit", "compare", *common, "--backend", "ray"],
                            capture_output=True, text=True, check=True)
    assert without_timings(json.loads(remote.stdout)) == without_timings(json.loads(local.stdout))


def test_cli_refuses_unknown_backend():
    result = CliRunner().invoke(app, ["compare", str(MODELS[0]), "--data", "sample", "--backend", "spark"])
    assert_user_error(result, "--backend must be 'local' or 'ray'")


def test_an_unreachable_cluster_is_refused_at_once(monkeypatch):
    import time

    start = time.perf_counter()
    result = CliRunner().invoke(app, ["compare", str(MODELS[0]), "--data", "sample", "--backend", "ray",
                                      "--ray-address", "127.0.0.1:1"])
    assert_user_error(result, "--ray-address 127.0.0.1:1: no Ray cluster answers there", "ray start --head")
    assert time.perf_counter() - start < 10  # Ray's own client would retry for minutes
    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:1")
    with pytest.raises(GenauditError, match="no Ray cluster answers"):
        RunOptions(backend="ray").check()
    RunOptions(backend="ray", ray_address="auto").check()  # Ray's own discovery: not ours to check


def test_no_cluster_to_join_is_a_user_error(monkeypatch, files):
    """Ray's own refusal (e.g. `auto` finding no running cluster) becomes one message and exit 2."""
    def no_cluster(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(GenauditError, match=r"could not start or join a Ray cluster \(address auto\): Could not find"):
        run_tasks(square, files, (10,), RunOptions(backend="ray", ray_address="auto"))
