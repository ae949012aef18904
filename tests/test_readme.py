"""The README's examples run as written: every `genaudit ...` line of its ```bash blocks goes through the installed
command in a subprocess, in a copy of the repository's sample models (examples may write files), offline, and
must exit with 0 — or with the code its comment documents (`# exits 1`) — and never print a traceback. The
terminal excerpt in the README is that command's real output; the CI recipe's audit step runs on the sample
models; the docs' links resolve and the architecture page lists every module.

A line that cannot run here (it needs the network, or files the repository does not have) is marked `# not run`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent  # the environment's console scripts: the installed `genaudit`
NAMED_SETS = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def examples(text: str) -> list[str]:
    """The `genaudit` command lines of the ```bash blocks, continuation lines joined, in order."""
    lines = []
    for block in blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("genaudit ") and "# not run" not in line:
                lines.append(line)
    return lines


def expected_code(line: str) -> int:
    found = re.search(r"#.*\bexits? (\d+)", line)
    return int(found[1]) if found else 0


EXAMPLES = examples(README)


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GENAUDIT_CONFIG", "FORCE_COLOR", "NO_COLOR")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", COLUMNS="80", GENAUDIT_OFFLINE="1",
               GENAUDIT_CACHE=str(tmp / "cache"), GENAUDIT_DATA_DIR=str(tmp / "data-cache"))
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The files the examples read, copied, so that the files they write stay out of the repository."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "sample_models", work / "sample_models")
    shutil.copytree(ROOT / "tests" / "fixtures" / "real_models", work / "tests" / "fixtures" / "real_models")
    return work


@pytest.fixture(scope="module")
def ran(workdir, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every example, run once and in README order (later ones read what earlier ones write)."""
    env = _env(tmp_path_factory.getbasetemp())
    return {line: subprocess.run(["bash", "-c", line], cwd=workdir, env=env, capture_output=True, text=True,
                                 timeout=300) for line in EXAMPLES}


def test_the_readme_keeps_the_install_and_test_commands_ci_runs():
    assert ("python3.11 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]'\n"
            "genaudit score sample_models/mlp_clean.onnx --data sample --train-size 10000\n") in README
    assert "```bash\npython -m pytest\n```" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e '.[test]'" in ci and "python -m pytest" in ci


def test_the_readme_has_an_example_of_every_command():
    commands = {line.split()[1] for line in EXAMPLES}
    assert {"score", "compare", "suspects", "validate", "watch", "layers", "explain"} <= commands
    offline = [line for line in EXAMPLES if re.search(rf"--data\s+({'|'.join(NAMED_SETS)})\b", line)]
    assert offline == [], "examples must run offline (a named set is downloaded): use --data sample"


@pytest.mark.parametrize("line", EXAMPLES)
def test_readme_example_runs(line, ran):
    done = ran[line]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == expected_code(line), f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_the_terminal_excerpt_is_real_output(ran):
    """The report pasted in the README is what the command prints (80 columns); the timing line may differ.
    After a change to the report or the estimate, paste the output of the command again."""
    command = "genaudit score sample_models/mlp_clean.onnx --data sample --train-size 10000"
    pasted = blocks(README, "text")[0]
    printed = ran[command].stdout

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines() if not line.startswith("time: ")]

    assert lines(pasted) == lines(printed), f"re-paste the output of `{command}` into README.md"


def workflows() -> list[dict]:
    return [yaml.safe_load(block) for block in blocks(README, "yaml") if "jobs:" in block]


def test_the_ci_recipe_uses_the_small_install_and_posts_a_comment():
    (workflow,) = workflows()
    assert workflow == yaml.safe_load(blocks((ROOT / "docs" / "ci.md").read_text(), "yaml")[0])  # one recipe
    steps = workflow["jobs"]["audit"]["steps"]
    installs = [s["run"] for s in steps if str(s.get("run", "")).startswith("pip install")]
    assert installs == ["pip install genaudit"]  # no torch: the CI-sized install
    assert workflow["permissions"]["pull-requests"] == "write"
    comment = next(s for s in steps if "sticky-pull-request-comment" in s.get("uses", ""))
    assert comment["with"]["path"] == "audit.md"
    assert "steps.audit.outputs.code" in steps[-1]["run"]
    # the derived data and conversions are kept between runs, in genaudit's default cache folder, before the audit
    cache = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/cache"))
    assert steps[cache]["with"]["path"] == "~/.cache/genaudit" and cache < steps.index(next(
        s for s in steps if s.get("id") == "audit"))


@pytest.mark.parametrize("model, code", [("sample_models/mlp_clean.onnx", 0), ("sample_models/mlp_random.onnx", 1),
                                         ("sample_models/no_such_model.onnx", 2)])
def test_the_ci_recipe_audit_step_runs(model, code, workdir, tmp_path, tmp_path_factory):
    """The recipe's audit step as GitHub runs it (bash -e), on the shipped models against a baseline of
    mlp_clean: the exit code it records for the gate step, and the comment it leaves in audit.md."""
    (workflow,) = workflows()
    script = next(s for s in workflow["jobs"]["audit"]["steps"] if s.get("id") == "audit")["run"]
    script = (script.replace("models/model.onnx", str(workdir / model))
              .replace("data/train_sample.npz", "sample").replace("audits/baseline.json", "baseline.json"))
    env = {**_env(tmp_path_factory.getbasetemp()), "GITHUB_OUTPUT": str(tmp_path / "output")}
    subprocess.run([str(BIN / "genaudit"), "score", str(workdir / "sample_models/mlp_clean.onnx"), "--data", "sample",
                    "--json", "baseline.json"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr  # the step itself passes: the gate step fails the job
    assert (tmp_path / "output").read_text().strip() == f"code={code}"
    comment = (tmp_path / "audit.md").read_text()
    assert comment.startswith("### genaudit"), comment[:300]
    if code == 1:
        assert "❌" in comment
    if code == 2:
        assert "could not audit" in comment and "no_such_model.onnx" in comment
    assert "Traceback" not in comment + done.stdout


def test_docs_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_architecture_page_lists_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines()
    missing = []
    for module in sorted((ROOT / "genaudit").rglob("*.py")):
        path = module.relative_to(ROOT).as_posix()
        folder, name = path.rsplit("/", 1)
        if not any(path in line or (f"`{folder}/" in line and f"`{name}`" in line) for line in page):
            missing.append(path)
    assert missing == [], f"docs/architecture.md does not list {missing}"
