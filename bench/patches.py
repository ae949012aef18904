"""Benchmark: building the patch space (`genaudit.patches.patch_features`) at audit sizes, on idle and busy cores.

    python bench/patches.py [--samples 2000] [--repeats 3] [--busy 2]

Random images (uniform, float32, already `prepared`) of N samples, MNIST-sized (1 x 28 x 28) and CIFAR-sized
(3 x 32 x 32): the cost does not depend on what the pixels show. Each is built in three settings, in turn:
one thread (one BLAS thread, an audit's BLAS budget: genaudit/threads.py, and one encoding thread), two BLAS threads
(not what an audit does: measured to show why), and two encoding threads each with one BLAS thread (what an audit
on two cores does: `patch_features(workers=2)`); first on idle cores (other work on the machine may run: its load
average is printed), then with `--busy` busy-loop processes beside it (`python -c "while True: pass"`, killed
afterwards). The spaces of every setting are checked bit for bit against the first. Prints the fastest and median
of --repeats builds in seconds and the peak RSS of the process, then the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genaudit.patches import patch_features, prepared  # noqa: E402

SHAPES = {"MNIST-sized 1x28x28": (1, 28, 28), "CIFAR-sized 3x32x32": (3, 32, 32)}


SETTINGS = {"1 thread": (1, 1), "2 BLAS threads": (2, 1), "2 encoding threads": (1, 2)}  # (BLAS, workers)


def timed(images: np.ndarray, blas: int, workers: int) -> tuple[float, np.ndarray]:
    with threadpool_limits(limits=blas):
        start = time.perf_counter()
        space = patch_features(images, workers=workers)
        return time.perf_counter() - start, space


def measure(images: np.ndarray, repeats: int) -> dict:
    """Fastest and median seconds in each setting (taking turns), and whether they all give the same space."""
    runs, spaces = {name: [] for name in SETTINGS}, {}
    for _ in range(repeats):
        for name, (blas, workers) in SETTINGS.items():
            seconds, spaces[name] = timed(images, blas, workers)
            runs[name].append(seconds)
    first = spaces[next(iter(SETTINGS))]
    return {name: {"fastest_s": round(min(r), 2), "median_s": round(statistics.median(r), 2)}
            for name, r in runs.items()} | {"identical": all(np.array_equal(first, s) for s in spaces.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes for the loaded runs (0: skip)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = {name: prepared(rng.random((args.samples, *shape)).astype(np.float32)) for name, shape in SHAPES.items()}
    results = {"samples": args.samples, "load_average": os.getloadavg()[0], "idle": {}, "loaded": {}}
    for name, x in images.items():
        results["idle"][name] = measure(x, args.repeats)
    if args.busy:
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        try:
            time.sleep(1)
            for name, x in images.items():
                results["loaded"][name] = measure(x, args.repeats)
        finally:
            for process in busy:
                process.kill()
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    for setting in ("idle", "loaded"):
        for name, r in results[setting].items():
            cells = "  ".join(f"{k}: fastest {v['fastest_s']:.2f} s, median {v['median_s']:.2f} s"
                              for k, v in r.items() if k != "identical")
            print(f"{setting:<7} {name:<22} {cells}  (identical: {r['identical']})")
    print(f"peak RSS {results['peak_rss_mb']} MB; load average before: {results['load_average']:.2f}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
