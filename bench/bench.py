"""Benchmark: a full default `genaudit score` against one plain inference pass and against a naive audit.

ResNet-18 (random weights, 10 classes) at CIFAR resolution (3x32x32), 2,000 samples, as TorchScript and ONNX.

    python bench/bench.py [--samples 2000] [--naive-passes 3] [--device cpu|auto|cuda]

Reports, for each format:
- plain: one inference pass over the data (batches of 256, after a warm-up batch) with the format's own
  runtime: onnxruntime for ONNX, torch for TorchScript (what a user of that format runs); also the wall time
  of a whole plain-inference process (interpreter, imports, loading, the pass) to compare processes fairly;
- audit: wall time of the whole `genaudit score` process (imports, loading, conversion, trunk pass,
  diagnostics, report), first run (conversion to ONNX) and cached run, and the audit's own timers;
- naive: an audit that reruns the whole network for every ablation level and repeat and every noise level
  (105 + 11 passes). Each pass costs the same, so it is timed on --naive-passes passes and multiplied.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

BATCH = 256
PASSES = 21 * 5 + 11  # default ablation levels x repeats + noise levels


def build(folder: Path, samples: int):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    example = torch.zeros(2, 3, 32, 32)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, example).save(str(folder / "resnet18.pt"))
        torch.onnx.export(model, (example,), str(folder / "resnet18.onnx"), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    x = np.random.default_rng(0).integers(0, 256, size=(samples, 32, 32, 3), dtype=np.uint8)
    np.savez(folder / "data.npz", x=x)
    return model, x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def plain_onnx(path: Path, x: np.ndarray, device: str = "cpu") -> float:
    import onnxruntime as ort

    from genaudit.models.runtime import providers_for

    session = ort.InferenceSession(str(path), providers=providers_for(device))
    session.run(None, {"input": x[:BATCH]})  # warm-up
    start = time.perf_counter()
    for i in range(0, len(x), BATCH):
        session.run(None, {"input": x[i : i + BATCH]})
    return time.perf_counter() - start


def plain_torch(path: Path, x: np.ndarray) -> float:
    import torch

    model = torch.jit.load(str(path)).eval()
    with torch.no_grad():
        model(torch.from_numpy(x[:BATCH]))
        start = time.perf_counter()
        for i in range(0, len(x), BATCH):
            model(torch.from_numpy(x[i : i + BATCH]))
    return time.perf_counter() - start


PLAIN_PROCESS = {
    "onnx (onnxruntime)": """
import sys, numpy as np, onnxruntime as ort
from genaudit.models.runtime import providers_for
x = np.load(sys.argv[2])["x"].transpose(0, 3, 1, 2).astype(np.float32) / 255
s = ort.InferenceSession(sys.argv[1], providers=providers_for(sys.argv[3]))
for i in range(0, len(x), 256):
    s.run(None, {"input": x[i : i + 256]})
""",
    "torchscript (torch)": """
import sys, numpy as np, torch
x = torch.from_numpy(np.load(sys.argv[2])["x"].transpose(0, 3, 1, 2).astype(np.float32) / 255)
m = torch.jit.load(sys.argv[1]).eval()
with torch.no_grad():
    for i in range(0, len(x), 256):
        m(x[i : i + 256])
""",
}


def plain_process(fmt: str, model: Path, data: Path, device: str = "cpu") -> float:
    """Wall time of a whole plain-inference process: interpreter, imports, load, one pass."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", PLAIN_PROCESS[fmt], str(model), str(data), device], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def naive_torch(model, x: np.ndarray, passes: int) -> float:
    """Seconds per full-network pass with the feature layer masked by a forward hook (eager torch)."""
    import torch

    mask = torch.ones(512)
    model.avgpool.register_forward_hook(lambda mod, inp, out: out * mask.view(1, -1, 1, 1))
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(passes):
            mask = (torch.rand(512) > 0.5).float()
            for i in range(0, len(x), BATCH):
                model(torch.from_numpy(x[i : i + BATCH]))
    return (time.perf_counter() - start) / passes


def audit_process(model: Path, data: Path, cache: Path, device: str = "cpu") -> tuple[float, dict, int]:
    """Wall time of a whole `genaudit score --device DEVICE` process, its JSON timers, and its peak RSS in MB."""
    env = {**os.environ, "GENAUDIT_CACHE": str(cache)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUNNER, str(model), str(data), device], env=env, check=True,
                         capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    result = json.loads(out.strip().splitlines()[-1])
    return wall, result["timings"], result["peak_mb"]


RUNNER = """
import json, resource, sys
from genaudit.cli import app
from genaudit.pipeline import audit
import genaudit.pipeline as p
timings = {}
real = p.audit
def spy(*a, **k):
    card = real(*a, **k)
    timings.update(card.timings)
    return card
p.audit = spy
try:
    app(["score", sys.argv[1], "--data", sys.argv[2], "--no-labels", "--format", "json", "--device", sys.argv[3]],
        standalone_mode=False)
except SystemExit:
    pass
print()
print(json.dumps({"timings": timings, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--naive-passes", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                        help="where the ONNX runs (plain pass and audit): cuda needs onnxruntime-gpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, x = build(folder, args.samples)
        plain = {"onnx (onnxruntime)": plain_onnx(folder / "resnet18.onnx", x, args.device),
                 "torchscript (torch)": plain_torch(folder / "resnet18.pt", x)}
        per_pass = {"onnx (onnxruntime)": plain["onnx (onnxruntime)"],  # a naive ORT audit reruns the whole graph
                    "torchscript (torch)": naive_torch(model, x, args.naive_passes)}
        rows = []
        for fmt, file in (("onnx (onnxruntime)", "resnet18.onnx"), ("torchscript (torch)", "resnet18.pt")):
            cache = folder / f"cache-{file}"
            first = audit_process(folder / file, folder / "data.npz", cache, args.device)
            cached = audit_process(folder / file, folder / "data.npz", cache, args.device)
            naive = per_pass[fmt] * PASSES + plain[fmt]
            process = plain_process(fmt, folder / file, folder / "data.npz", args.device)
            rows.append({
                "format": fmt, "plain_s": round(plain[fmt], 2), "plain_process_s": round(process, 2),
                "audit_first_s": round(first[0], 2), "audit_cached_s": round(cached[0], 2),
                "audit_timers": {k: round(v, 2) for k, v in cached[1].items()},
                "peak_rss_mb": cached[2],
                "ratio_audit_to_plain_first": round(first[0] / plain[fmt], 2),
                "ratio_audit_to_plain_cached": round(cached[0] / plain[fmt], 2),
                "ratio_in_process": round(sum(cached[1].values()) / plain[fmt], 2),
                "ratio_process_to_plain_process_cached": round(cached[0] / process, 2),
                "naive_s": round(naive, 1),
                "speedup_vs_naive_first": round(naive / first[0], 1),
                "speedup_vs_naive_cached": round(naive / cached[0], 1),
            })
        print(json.dumps({"samples": args.samples, "model": "resnet18 3x32x32, random weights",
                          "cpu_threads": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
