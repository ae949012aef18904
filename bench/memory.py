"""Benchmark: peak memory (max RSS) and wall time of whole `genaudit score` processes on a named data set, by
sample count, to check that memory follows the samples audited and not the data set's size.

    python bench/memory.py --data-dir DIR [--data mnist] [--samples 2000,60000] [--model sample_models/cnn_clean.onnx]

DIR must hold the set in torchvision's layout (e.g. DIR/MNIST/raw/...). The data set is copied into a
temporary cache first, so the first (decoding) read is measured too and DIR is never written to.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# The child reports its own peak at exit (RUSAGE_CHILDREN would give the maximum over all runs so far): VmHWM,
# the peak of its own memory since exec (ru_maxrss would include this parent's peak, which Linux carries over
# into a forked and exec'ed child), or ru_maxrss where there is no /proc.
CHILD = ("import atexit, resource, sys\n"
         "def peak():\n"
         "    try:\n"
         "        with open('/proc/self/status') as fh:\n"
         "            return next(int(line.split()[1]) for line in fh if line.startswith('VmHWM:'))\n"
         "    except (OSError, StopIteration):\n"
         "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
         "atexit.register(lambda: sys.stderr.write(f'MAXRSS {peak()}\\n'))\n"
         "from genaudit.cli import main; main()")


def run(args: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one CLI process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    kb = int(done.stderr.rsplit("MAXRSS ", 1)[1].split()[0])
    return wall, kb / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--samples", default="2000,60000")
    parser.add_argument("--model", type=Path, default=REPO / "sample_models" / "cnn_clean.onnx")
    args = parser.parse_args()
    from genaudit.data.sources import NAMED

    folder = NAMED[args.data][1]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(args.data_dir / folder, Path(tmp) / folder)
        env = {**os.environ, "GENAUDIT_OFFLINE": "1", "GENAUDIT_DATA_DIR": tmp}
        base = ["score", str(args.model), "--data", args.data, "-f", "json"]
        counts = sorted(int(n) for n in args.samples.split(","))
        wall, peak = run([*base, "--samples", str(counts[0])], env)
        print(f"first read (decodes with torchvision), {counts[0]} samples: {wall:.2f} s, peak {peak:.2f} GB")
        for n in counts:
            wall, peak = run([*base, "--samples", str(n)], env)
            print(f"cached read, {n} samples: {wall:.2f} s, peak {peak:.2f} GB")


if __name__ == "__main__":
    main()
