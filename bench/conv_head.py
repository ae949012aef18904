"""Benchmark: what one run of a conv-layer head costs, and what onnxruntime's settings change about it.

    python bench/conv_head.py [--rounds 20]

ResNet-18 (bench/bench.py's model, 3x32x32) cut at layer3's output (256x2x2; the head is layer4 + pool + fc, whose
convolutions see 2x2 and 1x1 maps), the head as genaudit builds it (`genaudit.models.runtime.head_model`), fed 500
rows of ReLU'd random features (the head subsample's size). Prints the median milliseconds per 500 rows for each
graph optimization level of onnxruntime with 1 and 2 threads, and, at genaudit's setting (all optimizations),
the same per 500 rows when the rows come 50 to 2,000 per call: whether more rows per call or other settings
would make the head's ~160 runs of a conv-layer audit cheaper without changing a value. Last, the same useful
arithmetic as one matrix product per convolution over the rows (the taps that meet the 2x2 and 1x1 maps, random
weights of the same shapes, numpy on one thread): what a rewrite of such convolutions could buy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import CONV_LAYER, build  # noqa: E402

ROWS = 500


def session(model: bytes, level, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as genaudit's Runner
    options.graph_optimization_level = level
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def per_rows(sess, x: np.ndarray, rounds: int) -> float:
    """Median milliseconds per ROWS rows over `rounds` calls on `x` (after one warm-up call)."""
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) * ROWS / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort

    from genaudit.models.graph import OnnxGraph
    from genaudit.models.runtime import head_model

    levels = ort.GraphOptimizationLevel
    with tempfile.TemporaryDirectory() as folder:
        build(Path(folder), [ROWS])
        head = head_model(OnnxGraph(onnx.load(str(Path(folder) / "resnet18.onnx"))), CONV_LAYER)
    x = np.maximum(np.random.default_rng(0).standard_normal((ROWS, 256, 2, 2)), 0).astype(np.float32)
    print(f"ResNet-18 head after layer3, ms per {ROWS} rows (median of {args.rounds} calls)")
    for name in ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"):
        cells = [f"{threads} thread{'s' * (threads > 1)} "
                 f"{per_rows(session(head, getattr(levels, name), threads), x, args.rounds):6.1f}"
                 for threads in (1, 2)]
        print(f"  {name:20s} " + "   ".join(cells))
    print("ORT_ENABLE_ALL (genaudit's setting), ms per 500 rows by rows per call:")
    for threads in (1, 2):
        sess = session(head, levels.ORT_ENABLE_ALL, threads)
        cells = [f"{n}: {per_rows(sess, np.ascontiguousarray(np.resize(x, (n, 256, 2, 2))), args.rounds):5.1f}"
                 for n in (50, 125, 500, 2000)]
        print(f"  {threads} thread{'s' * (threads > 1)}  " + "   ".join(cells))
    print(f"the same useful arithmetic as matrix products (numpy, 1 thread): {as_products(args.rounds):.1f} ms per "
          f"{ROWS} rows")


def as_products(rounds: int) -> float:
    """Median milliseconds per ROWS rows of the head's useful arithmetic as matrix products (numpy, one thread):
    layer4.0's conv1 (the 4 taps of its 3x3 window that meet the 2x2 map, 256 -> 512), its downsample (one pixel),
    conv2 and layer4.1's two convolutions (the centre tap of a 1x1 map, 512 -> 512), the residual sums and fc."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, 256 * 4)).astype(np.float32)
    w1, down, w2, w3, w4 = (rng.standard_normal(shape).astype(np.float32)
                            for shape in ((1024, 512), (256, 512), (512, 512), (512, 512), (512, 512)))
    fc = rng.standard_normal((512, 10)).astype(np.float32)

    def head() -> np.ndarray:
        a = np.maximum(np.maximum(x @ w1, 0) @ w2 + x[:, :256] @ down, 0)
        return np.maximum(np.maximum(a @ w3, 0) @ w4 + a, 0) @ fc

    with threadpool_limits(1):
        head()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            head()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


if __name__ == "__main__":
    main()
