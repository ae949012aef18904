"""Ctrl-C at any point of a run: exit 130 with one line, no traceback, and no half-written output file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from genaudit.cli import main; main()"]


def _auditing(pid: int) -> bool:
    """Whether the process, or one of its children, has loaded onnxruntime (done only inside a command)."""
    try:
        if "onnxruntime" in Path(f"/proc/{pid}/maps").read_text():
            return True
        children = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children"))
    except OSError:
        return False
    return any(_auditing(int(child)) for child in children.split())


def _interrupt(args: list[str], folder: Path, after: float) -> subprocess.CompletedProcess:
    """Run the CLI, press Ctrl-C `after` seconds once it has started auditing (SIGINT to its process group, as
    a terminal does), and return the finished process."""
    proc = subprocess.Popen([*CLI, *args], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "120"}, start_new_session=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _auditing(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(after)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="waits for the audit to start via /proc")
@pytest.mark.parametrize("after", [0.0, 0.4, 1.0])
def test_ctrl_c_during_score_leaves_nothing_half_written(after, tmp_path):
    outputs = [tmp_path / "card.json", tmp_path / "report.html"]
    args = ["score", str(REPO / "sample_models" / "cnn_clean.onnx"), "--data", "sample", "--probes", "1000",
            "--layers", "all", "--json", str(outputs[0]), "--html", str(outputs[1])]
    result = _interrupt(args, tmp_path, after)
    assert result.returncode in ((130,) if after == 0 else (130, 0)), result.stderr  # 0: done before the signal
    assert "Traceback" not in result.stderr
    if result.returncode == 130:
        assert "interrupted" in result.stderr
    if after == 0:
        assert not any(p.exists() for p in outputs)
    # Whole or absent: a signal after the files were written (while the report prints) leaves them whole.
    if outputs[0].exists():
        assert json.loads(outputs[0].read_text())["schema_version"]
    if outputs[1].exists():
        assert outputs[1].read_text().endswith("</html>\n")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="waits for the audit to start via /proc")
def test_ctrl_c_during_parallel_compare_stops_the_workers_quietly(tmp_path):
    models = [str(REPO / "sample_models" / name) for name in ("cnn_clean.onnx", "mlp_clean.onnx", "mlp_random.onnx")]
    out = tmp_path / "comparison.json"
    result = _interrupt(["compare", *models, "--data", "sample", "--probes", "1000", "--jobs", "2", "--json",
                         str(out)], tmp_path, 0.3)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
