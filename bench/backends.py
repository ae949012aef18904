"""Benchmark: one `genaudit compare` of a series of checkpoints on each backend, as whole processes, and the
share of compare's time the representation-drift step (CKA/SVCCA between checkpoints) takes.

    python bench/backends.py [--models 6] [--samples 2000] [--repeat 2]

The series is the shipped sample models repeated to `--models` files (copies under new names, so each is audited
on its own). Reports the best wall time of `--repeat` runs for: local (one process), local with --jobs 2, and
Ray (--backend ray: a local Ray instance started and stopped by the command, --task-cpus 1), and checks that
the three comparisons are the same document (timings aside).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["mlp_clean.onnx", "cnn_clean.onnx", "mlp_random.onnx"]


def timed(args: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "genaudit", "compare", *args, "-f", "json"], capture_output=True,
                         text=True, check=True).stdout
    return time.perf_counter() - start, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.models):
            shutil.copy(REPO / "sample_models" / SOURCES[i % len(SOURCES)], Path(folder) / f"ckpt_{i}.onnx")
        common = [folder, "--data", "sample", "--samples", str(args.samples)]
        runs = {"local": [], "local --jobs 2": ["--jobs", "2"], "ray (2 tasks at a time)": ["--backend", "ray"]}
        documents = {}
        print(f"{args.models} models, {args.samples} samples, best of {args.repeat}:")
        for name, extra in runs.items():
            times = []
            for _ in range(args.repeat):
                seconds, documents[name] = timed(common + extra)
                times.append(seconds)
            print(f"  {name:24s} {min(times):6.2f} s")
        drift_share(sorted(Path(folder).glob("*.onnx")), args.samples, args.repeat)
    same = len({json.dumps(d, sort_keys=True) for d in documents.values()}) == 1
    print(f"same comparison on every backend: {same}")


def drift_share(paths: list[Path], samples: int, repeat: int) -> None:
    """In process: the audits of the series against the drift step over their scorecards (best of `repeat`)."""
    from genaudit.comparison import audit_all, drift
    from genaudit.options import AuditOptions, DataOptions

    dataset = DataOptions(samples=samples).load("sample", 0)
    audits, similarity = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        _, cards, _ = audit_all(paths, dataset, AuditOptions())
        audits.append(time.perf_counter() - start)
        start = time.perf_counter()
        drift(cards)
        similarity.append(time.perf_counter() - start)
    print(f"  in process: audits {min(audits):.2f} s, drift {min(similarity):.3f} s "
          f"({100 * min(similarity) / min(audits):.1f}% of the audits)")


if __name__ == "__main__":
    main()
