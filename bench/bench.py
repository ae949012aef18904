"""Benchmark: a full default `genaudit score` process against a plain inference process over the same samples.

ResNet-18 (random weights, 10 classes) at CIFAR resolution (3x32x32), as ONNX and TorchScript, at 2,000 and
10,000 samples (the first N of one seeded set of random images: the same samples on both sides).

    python bench/bench.py [--samples 2000,10000] [--repeats 1] [--naive-passes 3] [--device cpu|auto|cuda]
                          [--conv-layer NAME | --conv-layer none] [--formats onnx,torchscript]

Prints a table, then the same numbers as JSON. For each format and sample count:
- plain process: wall time of a whole plain-inference process with the format's own runtime (interpreter,
  imports, reading the .npz, loading the model, one pass in batches of 256): onnxruntime for ONNX, torch for
  TorchScript (what a user of that format runs; it imports nothing from genaudit);
- audit process: wall time of a whole `genaudit score --no-labels --samples N` process (imports, loading, trunk
  pass, diagnostics, JSON report), with the model cache full (TorchScript is converted to ONNX once per file, and
  an ONNX graph's analysis and its cut are cached per file hash, layer and version; what depends on the samples
  alone, the input space's neighbours, is cached by their digest: that first run is reported separately as
  audit_first_s, at the smallest sample count), its own timers and its peak RSS;
- ratio = audit process / plain process (the target is <= 1.2x);
- CPU time of each process (user + system, all threads; the fastest run's) and their ratio: what the audit costs
  a machine whose cores are busy, and a floor for the wall time on an idle one (CPU time / cores).
genaudit's modules are compiled to bytecode first, as pip installs them (`compiled`). With --repeats R, each
process is run R times and the fastest run is reported (other work on the machine only ever slows a run down).

Also, at the smallest sample count:
- with labels: the default audit of labelled data (the .npz files hold y, below), which also builds the patch space
  the estimate reads (genaudit.patches): once with everything computed from the samples alone made in the process
  (cold: the patch space and the neighbour searches' disk cache emptied before every run) and once read from the
  cache a previous audit of the same images left (warm);
- conv layer: an ONNX audit cut at a conv layer (default: the output of ResNet-18's layer3) against its trunk
  pass: the audit's own timers (features = the trunk pass, diagnostics = the head passes on masked and noisy
  copies of the feature maps, score = a labelled audit's label-free rerun of the score's components), and the
  process against the plain process; once with --no-labels like the rows above, and once with labels (the
  .npz files hold y: the model's own predictions with a seeded 20% replaced by random classes, so the labelled
  accuracy is about 82%, far from chance), the default when the data has labels;
- plain in-process pass and naive: an audit that reruns the whole network for every ablation level and repeat
  and every noise level (105 + 11 passes). Each pass costs the same, so it is timed on --naive-passes passes
  and multiplied (--naive-passes 0 skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

BATCH = 256
PASSES = 21 * 5 + 11  # default ablation levels x repeats + noise levels
CONV_LAYER = "/layer3/layer3.1/relu_1/Relu_output_0"  # ResNet-18's layer3 output in the ONNX export (256x2x2)
FORMATS = {"onnx": ("onnx (onnxruntime)", "resnet18.onnx"), "torchscript": ("torchscript (torch)", "resnet18.pt")}


def build(folder: Path, samples: list[int]):
    """The model in both formats and one .npz per sample count (the first N of the same images)."""
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
    x = np.random.default_rng(0).integers(0, 256, size=(max(samples), 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():  # labels: the model's predictions, a seeded 20% replaced by random classes
        y = np.concatenate([model(torch.from_numpy(x[i : i + BATCH].transpose(0, 3, 1, 2).astype(np.float32)
                                                   / 255.0)).argmax(1).numpy() for i in range(0, len(x), BATCH)])
    rng = np.random.default_rng(1)
    replaced = rng.random(len(y)) < 0.2
    y[replaced] = rng.integers(0, 10, int(replaced.sum()))
    for n in samples:
        np.savez(folder / f"data{n}.npz", x=x[:n], y=y[:n])
    return model, x[: min(samples)].transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def onnx_providers(device: str) -> list[str]:
    """onnxruntime's providers for --device, chosen as genaudit chooses them (without importing genaudit)."""
    import onnxruntime as ort

    cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
    if device in ("auto", "cuda") and cuda in ort.get_available_providers():
        return [cuda, cpu]
    if device == "cuda":
        raise SystemExit("--device cuda: this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)")
    return [cpu]


def plain_onnx(path: Path, x: np.ndarray, device: str = "cpu") -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=onnx_providers(device))
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


# A child's own peak RSS in MB, printed last. VmHWM is the peak of the process's own memory since its exec;
# ru_maxrss is not: Linux carries the parent's peak over into a forked and exec'ed child, so every child of this
# bench (which holds torch and the model, about 1.1 GB) would report at least that.
PEAK = """
def _peak_mb():
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) // 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
"""

# Whole plain-inference processes: the format's own runtime only (no genaudit import: that would charge the
# plain side with genaudit's own imports, onnx among them). Each prints its peak RSS in MB last.
PLAIN_PROCESS = {
    "onnx": """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])["x"].transpose(0, 3, 1, 2).astype(np.float32) / 255
cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
providers = [cuda, cpu] if sys.argv[3] in ("auto", "cuda") and cuda in ort.get_available_providers() else [cpu]
s = ort.InferenceSession(sys.argv[1], providers=providers)
for i in range(0, len(x), 256):
    s.run(None, {"input": x[i : i + 256]})
""" + PEAK + "print(_peak_mb())",
    "torchscript": """
import sys, numpy as np, torch
x = torch.from_numpy(np.load(sys.argv[2])["x"].transpose(0, 3, 1, 2).astype(np.float32) / 255)
m = torch.jit.load(sys.argv[1]).eval()
with torch.no_grad():
    for i in range(0, len(x), 256):
        m(x[i : i + 256])
""" + PEAK + "print(_peak_mb())",
}


def child(command: list[str], **options) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a whole process: its wall time, the CPU time (user + system, every thread) it used, and its result."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, **options)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


def plain_process(fmt: str, model: Path, data: Path, device: str = "cpu") -> tuple[float, int, float]:
    """Wall time of a whole plain-inference process (interpreter, imports, load, one pass), its peak RSS (MB) and
    its CPU time."""
    wall, cpu, done = child([sys.executable, "-c", PLAIN_PROCESS[fmt], str(model), str(data), device])
    return wall, int(done.stdout.split()[-1]), cpu


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


def audit_process(model: Path, data: Path, cache: Path, device: str = "cpu", samples: int = 2000,
                  extra: tuple[str, ...] = (), labels: bool = False) -> tuple[float, dict, int, float]:
    """Wall time of a whole `genaudit score --no-labels --samples N --device DEVICE` process (`labels`: with
    --labels), its JSON timers, its peak RSS in MB and its CPU time."""
    env = {**os.environ, "GENAUDIT_CACHE": str(cache)}
    wall, cpu, done = child([sys.executable, "-c", RUNNER, str(model), str(data), device, str(samples),
                             "--labels" if labels else "--no-labels", *extra], env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["timings"]:  # the CLI reported an error (and exited) instead of auditing
        raise RuntimeError(f"the audit of {model.name} {' '.join(extra)} failed: {done.stderr.strip()[-2000:]}")
    return wall, result["timings"], result["peak_mb"], cpu


RUNNER = PEAK + """
import json, sys
from genaudit.cli import main
from genaudit.pipeline import audit
import genaudit.pipeline as p
timings = {}
real = p.audit
def spy(*a, **k):
    card = real(*a, **k)
    timings.update(card.timings)
    return card
p.audit = spy
sys.argv = ["genaudit", "score", sys.argv[1], "--data", sys.argv[2], "--format", "json", "--device", sys.argv[3],
            "--samples", sys.argv[4], *sys.argv[5:]]
try:
    main()  # the command as its console script runs it
except SystemExit:
    pass
print()
print(json.dumps({"timings": timings, "peak_mb": _peak_mb()}))
"""


def fastest(runs: list[tuple]) -> tuple:
    """The run with the smallest wall time (the first element)."""
    return min(runs, key=lambda r: r[0])


def table(rows: list[dict], labelled: list[dict], convs: list[dict]) -> str:
    head = (f"{'format':<22}{'samples':>8}{'plain s':>9}{'audit s':>9}{'ratio':>7}{'plain CPU s':>12}"
            f"{'audit CPU s':>12}{'ratio':>7}{'audit RSS MB':>14}{'plain RSS MB':>14}   audit timers (s)")
    lines = [head, "-" * len(head)]
    for r in rows:
        timers = " ".join(f"{k} {v}" for k, v in r["audit_timers"].items())
        lines.append(f"{r['format']:<22}{r['samples']:>8}{r['plain_process_s']:>9.2f}{r['audit_cached_s']:>9.2f}"
                     f"{r['ratio_process_to_plain_process_cached']:>6.2f}x{r['plain_cpu_s']:>12.2f}"
                     f"{r['audit_cpu_s']:>12.2f}{r['ratio_cpu']:>6.2f}x{r['peak_rss_mb']:>14}"
                     f"{r['plain_peak_rss_mb']:>14}   {timers}")
    for run in labelled:
        timers = " ".join(f"{k} {v}" for k, v in run["audit_timers"].items())
        lines += ["", f"with labels ({run['format']}, {run['samples']} samples, patch space {run['patch_space']}): "
                      f"audit process {run['audit_s']:.2f} s = {run['ratio_process_to_plain_process']:.2f}x the plain "
                      f"process; peak RSS {run['peak_rss_mb']} MB; timers {timers}"]
    for conv in convs:
        t = conv["audit_timers"]
        line = (f"conv layer ({conv['format']}, {conv['layer']}, {conv['samples']} samples, {conv['labels']}): "
                f"trunk pass (features timer) {t.get('features', 0):.2f} s, diagnostics "
                f"{t.get('diagnostics', 0):.2f} s = {conv['ratio_diagnostics_to_trunk_pass']:.1f}x the trunk pass, "
                f"score {t.get('score', 0):.2f} s; (features + diagnostics) / features = "
                f"{conv['ratio_in_process_to_trunk_pass']:.1f}x; audit process {conv['audit_s']:.2f} s = "
                f"{conv['ratio_process_to_plain_process']:.1f}x the plain process; peak RSS {conv['peak_rss_mb']} MB")
        lines += ["", line]
    return "\n".join(lines)


def compiled() -> None:
    """genaudit's modules compiled to bytecode, as `pip install genaudit` leaves them (and as the plain process
    finds numpy and onnxruntime). An editable install run with PYTHONDONTWRITEBYTECODE=1 (this machine's setting)
    would otherwise compile genaudit's modules in every audit process: `import genaudit.cli` took 0.339 s against
    0.313 s from bytecode (medians of 10 processes; fastest 0.289 against 0.228 s), time the plain process never
    pays."""
    import compileall

    import genaudit

    compileall.compile_dir(Path(genaudit.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="2000,10000", help="comma-separated sample counts")
    parser.add_argument("--repeats", type=int, default=1, help="runs per process; the fastest is reported")
    parser.add_argument("--naive-passes", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                        help="where the ONNX runs (plain pass and audit): cuda needs onnxruntime-gpu")
    parser.add_argument("--conv-layer", default=CONV_LAYER, help="the conv layer of the conv-layer line (none: skip)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats (onnx,torchscript)")
    args = parser.parse_args()
    compiled()
    formats = {f: FORMATS[f] for f in args.formats.split(",") if f}
    counts = sorted({int(n) for n in args.samples.split(",")})
    repeats = max(1, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, x = build(folder, counts)
        rows, first_runs = [], {}
        for n in counts:
            data = folder / f"data{n}.npz"
            for fmt, (label, file) in formats.items():
                cache = folder / f"cache-{file}"
                if fmt not in first_runs:  # the first audit converts TorchScript to ONNX (cached from then on)
                    first_runs[fmt] = audit_process(folder / file, data, cache, args.device, n)[0]
                cached = fastest([audit_process(folder / file, data, cache, args.device, n) for _ in range(repeats)])
                plain = fastest([plain_process(fmt, folder / file, data, args.device) for _ in range(repeats)])
                rows.append({
                    "format": label, "samples": n,
                    "plain_process_s": round(plain[0], 2), "plain_peak_rss_mb": plain[1],
                    "audit_cached_s": round(cached[0], 2),
                    "audit_timers": {k: round(v, 2) for k, v in cached[1].items()},
                    "peak_rss_mb": cached[2],
                    "ratio_process_to_plain_process_cached": round(cached[0] / plain[0], 2),
                    "plain_cpu_s": round(plain[2], 2), "audit_cpu_s": round(cached[3], 2),
                    "ratio_cpu": round(cached[3] / plain[2], 2),
                })
        small = counts[0]
        labelled = []  # the default audit of labelled data: the patch space built (cold) or read from the cache (warm)
        for state in ("cold", "warm") if "onnx" in formats else ():
            data, cache = folder / f"data{small}.npz", folder / "cache-resnet18.onnx"
            runs = []
            for _ in range(repeats):
                if state == "cold":  # nothing computed from these samples is cached: the patch space, the searches
                    for kind in ("patches", "neighbours"):
                        shutil.rmtree(cache / kind, ignore_errors=True)
                runs.append(audit_process(folder / "resnet18.onnx", data, cache, args.device, small, labels=True))
            wall, timers, peak, _ = fastest(runs)
            plain = next(r for r in rows if r["samples"] == small and r["format"] == FORMATS["onnx"][0])
            labelled.append({"format": FORMATS["onnx"][0], "samples": small, "patch_space": state,
                             "audit_s": round(wall, 2), "audit_timers": {k: round(v, 2) for k, v in timers.items()},
                             "peak_rss_mb": peak, "ratio_process_to_plain_process": round(
                                 wall / plain["plain_process_s"], 2)})
        convs = []
        for labels in (False, True) if args.conv_layer.lower() != "none" and "onnx" in formats else ():
            data, cache = folder / f"data{small}.npz", folder / "cache-resnet18.onnx"
            try:
                runs = [audit_process(folder / "resnet18.onnx", data, cache, args.device, small,
                                      ("--layer", args.conv_layer), labels) for _ in range(repeats)]
            except (subprocess.CalledProcessError, RuntimeError) as exc:  # e.g. the exporter named it otherwise
                print(f"conv-layer line skipped: {exc}", file=sys.stderr)
                break
            wall, timers, peak, _ = fastest(runs)
            plain = next(r for r in rows if r["samples"] == small and r["format"] == FORMATS["onnx"][0])
            convs.append({"format": FORMATS["onnx"][0], "layer": args.conv_layer, "samples": small,
                          "labels": "labels" if labels else "no labels",
                          "audit_s": round(wall, 2), "audit_timers": {k: round(v, 2) for k, v in timers.items()},
                          "peak_rss_mb": peak,
                          "ratio_diagnostics_to_trunk_pass": round(timers["diagnostics"] / timers["features"], 1),
                          "ratio_in_process_to_trunk_pass": round(
                              (timers["features"] + timers["diagnostics"]) / timers["features"], 1),
                          "ratio_process_to_plain_process": round(wall / plain["plain_process_s"], 1)})
        in_process = {}
        plain_pass = {fmt: plain_onnx(folder / "resnet18.onnx", x, args.device) if fmt == "onnx"
                      else plain_torch(folder / "resnet18.pt", x) for fmt in formats}
        for fmt, (label, _) in formats.items():
            row = next(r for r in rows if r["samples"] == small and r["format"] == label)
            entry = {"plain_pass_s": round(plain_pass[fmt], 2), "audit_first_s": round(first_runs[fmt], 2),
                     "ratio_in_process": round(sum(row["audit_timers"].values()) / plain_pass[fmt], 2)}
            if args.naive_passes > 0:
                per_pass = plain_pass[fmt] if fmt == "onnx" else naive_torch(model, x, args.naive_passes)
                naive = per_pass * PASSES + plain_pass[fmt]  # a naive ORT audit reruns the whole graph
                entry.update({"naive_s": round(naive, 1), "speedup_vs_naive_cached": round(naive / row["audit_cached_s"], 1)})
            in_process[label] = entry
        print(table(rows, labelled, convs))
        print()
        print(json.dumps({"model": "resnet18 3x32x32, random weights", "cpu_threads": os.cpu_count(),
                          "device": args.device, "repeats": repeats, "rows": rows, "with_labels": labelled,
                          "conv_layer": convs,
                          f"at_{small}_samples": in_process}, indent=2))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
