"""Benchmark: what one run of a conv-layer head costs, with its convolutions as onnxruntime runs them and as
genaudit builds the head (convolutions on maps of a few positions as matrix products: genaudit.models.small_maps).

    python bench/conv_head.py [--rounds 20]

ResNet-18 (bench/bench.py's model, 3x32x32) cut at layer3's output (256x2x2; the head is layer4 + pool + fc, whose
convolutions see 2x2 and 1x1 maps), fed 500 rows of ReLU'd random features (the head subsample's size). For both
heads: the median milliseconds per 500 rows for each graph optimization level of onnxruntime with 1 and 2 threads,
and, with all optimizations (genaudit's setting), per 500 rows when the rows come 50 to 2,000 per call; then the
largest difference between the two heads' logits and how many predicted classes differ.
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
        graph = OnnxGraph(onnx.load(str(Path(folder) / "resnet18.onnx")))
        heads = {"convolutions": head_model(graph, CONV_LAYER, products=False),
                 "genaudit's": head_model(graph, CONV_LAYER)}
    x = np.maximum(np.random.default_rng(0).standard_normal((ROWS, 256, 2, 2)), 0).astype(np.float32)
    for what, head in heads.items():
        print(f"ResNet-18 head after layer3, {what}: ms per {ROWS} rows (median of {args.rounds} calls)")
        for name in ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"):
            cells = [f"{threads} thread{'s' * (threads > 1)} "
                     f"{per_rows(session(head, getattr(levels, name), threads), x, args.rounds):6.1f}"
                     for threads in (1, 2)]
            print(f"  {name:20s} " + "   ".join(cells))
        for threads in (1, 2):
            sess = session(head, levels.ORT_ENABLE_ALL, threads)
            cells = [f"{n}: {per_rows(sess, np.ascontiguousarray(np.resize(x, (n, 256, 2, 2))), args.rounds):5.1f}"
                     for n in (50, 125, 500, 2000)]
            print(f"  all, by rows per call, {threads} thread{'s' * (threads > 1)}  " + "   ".join(cells))
    logits = [session(head, levels.ORT_ENABLE_ALL, 2).run(None, {CONV_LAYER: x})[0] for head in heads.values()]
    print(f"largest difference of the logits: {np.abs(logits[1] - logits[0]).max():.2e} (largest logit "
          f"{np.abs(logits[0]).max():.2e}); predicted classes that differ: "
          f"{int((logits[1].argmax(1) != logits[0].argmax(1)).sum())} of {ROWS}")


if __name__ == "__main__":
    main()
