"""Benchmark: `genaudit suspects` of one model against the checkpoints of a run.

    python bench/suspects.py [--checkpoints 5] [--samples 2000] [--repeats 3]

bench/bench.py's ResNet-18 (random weights, 3x32x32) and labelled images. The run's "checkpoints" are that model
with one bias moved by a different tiny amount each, so every file has its own hash: each is read, analysed and
cut afresh, as real checkpoints are, and costs what a checkpoint costs (one trunk pass, two model-space
searches; the input and patch neighbours depend on the samples alone and are found once). Reports the wall time
of a whole `genaudit suspects ... -f json` process for the last checkpoint alone and for all of them, fastest of
`--repeats`, with its peak RSS, each process with an empty cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import PEAK, build  # noqa: E402

RUNNER = PEAK + """
import sys
from genaudit.cli import app
try:
    app(["suspects", *sys.argv[1:], "-f", "json"], standalone_mode=False)
except SystemExit:
    pass
print()
print(_peak_mb())
"""


def checkpoints(model: Path, count: int) -> list[Path]:
    """`count` copies of the ONNX model, the k-th with its last initializer's first value moved by k * 1e-6."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model))
    tensor = graph.graph.initializer[-1]
    original = numpy_helper.to_array(tensor).copy()
    paths = []
    for k in range(count):
        values = original.copy()
        values.flat[0] += k * 1e-6
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
        path = model.parent / f"run_e{k + 1:02d}.onnx"
        onnx.save(graph, str(path))
        paths.append(path)
    return paths


def process(models: list[Path], data: Path, samples: int, cache: Path) -> tuple[float, int]:
    """Wall time and peak RSS (MB) of one `genaudit suspects` process with an empty model cache."""
    cache.mkdir()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, *map(str, models), "--data", str(data), "--samples",
                           str(samples), "--order", "given"], env={**os.environ, "GENAUDIT_CACHE": str(cache)},
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, int(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, [args.samples])
        run = checkpoints(folder / "resnet18.onnx", args.checkpoints)
        data = folder / f"data{args.samples}.npz"
        report = {"model": "resnet18 3x32x32, random weights", "samples": args.samples, "repeats": args.repeats}
        for name, models in (("last checkpoint", run[-1:]), (f"{len(run)} checkpoints", run)):
            timed = [process(models, data, args.samples, folder / f"cache-{name}-{r}") for r in range(args.repeats)]
            wall, peak = min(timed)
            report[name] = {"wall_s": round(wall, 2), "peak_rss_mb": peak}
            print(f"{name}: {wall:.2f} s, peak RSS {peak} MB (fastest of {args.repeats})")
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
