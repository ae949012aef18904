"""Benchmark: the thread budget on idle and on busy cores, as whole `genaudit compare` processes.

    python bench/threads.py [--repeats 3] [--busy 2]

Times `genaudit compare sample_models/mlp_clean.onnx sample_models/mlp_random.onnx sample_models/cnn_clean.onnx
--data sample` (whole processes: interpreter, imports, three audits, the comparison) in four settings:

- idle: nothing else started by this bench (the machine's load average is printed: other work may run);
- loaded: with `--busy` busy-loop processes (`python -c "while True: pass"`, one per core on a 2-core machine)
  running beside it, killed afterwards;

each with OPENBLAS_NUM_THREADS set to the number of cores (BLAS's pools created with one thread per core, numpy's
own default, which the command had before it started them with one thread itself, genaudit/threads.py) and with
OPENBLAS_NUM_THREADS=1 (what the command now does unless the user sets it); either way genaudit's budget limits the
pools during each audit. The two environments alternate run by run, so slow drifts of the machine's load hit both
alike. Prints, per setting, the fastest and median of the runs and their spread (max - min), then the ratio
per-core / one-thread of the fastest runs (the target: within 1.3x on loaded cores, i.e. genaudit's own budget
leaves little for one BLAS thread to win even where the user's environment asks for one per core), then JSON.
The model cache ($GENAUDIT_CACHE) is a fresh folder, filled by one warm-up run, so every timed run finds it full.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ["mlp_clean.onnx", "mlp_random.onnx", "cnn_clean.onnx"]
PER_CORE, ONE = f"OPENBLAS_NUM_THREADS={os.cpu_count()}", "OPENBLAS_NUM_THREADS=1"
ENVIRONMENTS = {PER_CORE: {"OPENBLAS_NUM_THREADS": str(os.cpu_count())}, ONE: {"OPENBLAS_NUM_THREADS": "1"}}


def compare_once(env: dict) -> float:
    """Wall time of one whole `genaudit compare` process."""
    command = [sys.executable, "-m", "genaudit", "compare", *(str(REPO / "sample_models" / m) for m in MODELS),
               "--data", "sample"]
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def measure(base: dict, repeats: int) -> dict[str, list[float]]:
    """`repeats` runs in each environment, alternating."""
    times: dict[str, list[float]] = {name: [] for name in ENVIRONMENTS}
    for _ in range(repeats):
        for name, extra in ENVIRONMENTS.items():
            times[name].append(compare_once({**base, **extra}))
    return times


def busy(count: int) -> list[subprocess.Popen]:
    """`count` busy-loop processes (killed by the caller)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def summary(runs: list[float]) -> dict:
    return {"fastest_s": round(min(runs), 2), "median_s": round(statistics.median(runs), 2),
            "spread_s": round(max(runs) - min(runs), 2), "runs_s": [round(r, 2) for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting and environment")
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes of the loaded setting")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        base = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
        base["GENAUDIT_CACHE"] = cache
        compare_once(base)  # warm-up: fills the model cache and the OS's file cache
        results["idle"] = {"load_average": os.getloadavg()[0], **{k: v for k, v in
                                                                  measure(base, args.repeats).items()}}
        workers = busy(args.busy)
        try:
            time.sleep(0.5)
            results["loaded"] = {"load_average": os.getloadavg()[0], **measure(base, args.repeats)}
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()
    report = {"cpu_count": os.cpu_count(), "repeats": args.repeats, "busy_processes": args.busy}
    print(f"genaudit compare of {len(MODELS)} sample models, {args.repeats} runs each, "
          f"{os.cpu_count()} cores (fastest / median / spread, seconds):")
    for setting, runs in results.items():
        rows = {name: summary(runs[name]) for name in ENVIRONMENTS}
        ratio = rows[PER_CORE]["fastest_s"] / rows[ONE]["fastest_s"]
        median_ratio = rows[PER_CORE]["median_s"] / rows[ONE]["median_s"]
        what = f"{setting} (+{args.busy} busy loops)" if setting == "loaded" else setting
        print(f"  {what}, load average {runs['load_average']:.1f} at start:")
        for name, row in rows.items():
            print(f"    {name:24s} {row['fastest_s']:6.2f} {row['median_s']:6.2f} {row['spread_s']:6.2f}")
        print(f"    ratio per-core / one-thread: {ratio:.2f}x (medians: {median_ratio:.2f}x)")
        report[setting] = {**rows, "load_average": round(runs["load_average"], 2),
                           "ratio_per_core_to_one_thread": round(ratio, 2),
                           "ratio_of_medians": round(median_ratio, 2)}
    print()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
