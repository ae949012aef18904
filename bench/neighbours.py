"""Benchmark: `nearest_neighbours` (the neighbour votes' search) at audit sizes, this tree against a git revision.

    python bench/neighbours.py [--against HEAD] [--samples 2000] [--dims 784,3072] [--k 20] [--repeats 5]

Random images (uint8 / 255, as float32) of N samples x D values; k = 20 is what an audit asks for (2K). The
revision's genaudit/diagnostics/neighbours.py is loaded beside this tree's, and the two run alternately, call by
call, so drifts of the shared machine's load hit both alike; their outputs are checked bit for bit first. Each
size is timed with one BLAS thread (an audit's budget, genaudit/threads.py) and with BLAS's default threads.
Prints the median and fastest of --repeats calls in seconds, then the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genaudit.diagnostics.neighbours import nearest_neighbours  # noqa: E402


def at_revision(revision: str):
    """`nearest_neighbours` as genaudit/diagnostics/neighbours.py was at `revision`."""
    source = subprocess.run(["git", "show", f"{revision}:genaudit/diagnostics/neighbours.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "neighbours_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("neighbours_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.nearest_neighbours


def timed(f, x: np.ndarray, k: int) -> float:
    start = time.perf_counter()
    f(x, k)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="git revision to compare with (default HEAD)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--dims", default="784,3072")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    before = at_revision(args.against)
    rows = []
    for dims in (int(d) for d in args.dims.split(",")):
        x = (np.random.default_rng(dims).integers(0, 256, (args.samples, dims)) / 255).astype(np.float32)
        old, new = before(x, args.k), nearest_neighbours(x, args.k)
        same = bool(np.array_equal(old[0], new[0]) and old[1].tobytes() == new[1].tobytes())
        for threads in (1, None):
            with threadpool_limits(threads):
                times = {"before": [], "after": []}
                for _ in range(args.repeats):
                    times["before"].append(timed(before, x, args.k))
                    times["after"].append(timed(nearest_neighbours, x, args.k))
            row = {"samples": args.samples, "dims": dims, "k": args.k, "blas_threads": threads or "default",
                   "identical": same}
            for side, values in times.items():
                row[f"{side}_median_s"] = round(statistics.median(values), 4)
                row[f"{side}_min_s"] = round(min(values), 4)
            row["speedup_median"] = round(row["before_median_s"] / row["after_median_s"], 2)
            rows.append(row)
            print(f"N={args.samples} D={dims:5d} k={args.k} BLAS threads {row['blas_threads']!s:7}: "
                  f"before {row['before_median_s']:.3f} s (min {row['before_min_s']:.3f}), "
                  f"after {row['after_median_s']:.3f} s (min {row['after_min_s']:.3f}), "
                  f"x{row['speedup_median']}, identical: {same}")
    print(json.dumps({"against": args.against, "repeats": args.repeats, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
