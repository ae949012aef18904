"""Study: how precise each head-evaluated curve is on how many samples, at layers whose head onnxruntime reruns.

    python bench/head_precision.py [--resnet] [--draws 200] [--orders 20] [--seeds 8]

For each case (the sample CNN's conv layers relu2 and pool1 on the shipped sample, with labels and without; with
--resnet also ResNet-18's layer3 on bench/bench.py's random images, without labels) it evaluates the head once
on every audited sample for --orders random unit orders at the 21 ablation levels, both selectivity orders,
the importance's 64 single units and the noise curve for --seeds noise draws, then redraws what an audit draws,
--draws times per sample count n: a subsample of n stratified by the clean predicted class (as `head_view`), 5
of the orders and one noise draw. Prints the standard deviation over draws of each value (the random-order
ablation AUC, the same with 5 fixed orders = its sample error alone, the noise AUC, the ordered-ablation AUCs and
the selectivity-importance rho) and its mean, per n: how many samples each value needs for a given precision.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from genaudit.data import stratified_indices  # noqa: E402
from genaudit.diagnostics import of_kind  # noqa: E402
from genaudit.diagnostics._head import MemoHead, broadcast_units, normalized_auc  # noqa: E402
from genaudit.diagnostics.ablation import ablation_masks  # noqa: E402
from genaudit.diagnostics.noise import unit_std  # noqa: E402
from genaudit.diagnostics.selectivity_extra import importance_correlation  # noqa: E402
from genaudit.options import AuditOptions, DataOptions, build  # noqa: E402
from genaudit.pipeline import trunk_pass  # noqa: E402
from genaudit.registry import Context, run  # noqa: E402

CNN = REPO / "sample_models" / "cnn_clean.onnx"
LEVELS, SCALES = np.linspace(0, 1, 21), np.linspace(0, 2, 11)


def study(model, data, layer: str, labels: bool, orders: int, seeds: int, draws: int, sizes: list[int]) -> dict:
    data_opts, opts = build({"layer": layer, "samples": 2000, "labels": labels}, DataOptions, AuditOptions)
    done = trunk_pass(model, data_opts.load(data, opts.seed), opts)
    fs = done.fs
    n_all, ref, f, d = len(fs.predictions), fs.reference, fs.features, fs.units
    si = np.asarray(run(of_kind("layer"), Context(fs, opts))["selectivity"]["per_unit"])
    head = MemoHead(done.cut.head)

    def predictions(order_rows: np.ndarray, fractions: np.ndarray) -> np.ndarray:
        masks = broadcast_units(ablation_masks(d, fractions, order_rows), f.ndim)
        return head.masked_predictions(f, masks).reshape(len(order_rows), len(fractions), n_all)

    rng = np.random.default_rng(123)
    random_orders = predictions(np.stack([rng.permutation(d) for _ in range(orders)]), LEVELS)
    by_si = predictions(np.stack([np.argsort(-si, kind="stable"), np.argsort(si, kind="stable")]), LEVELS)
    units = np.sort(np.random.default_rng(opts.seed).choice(d, size=min(d, opts.importance_units), replace=False))
    single = predictions((units[:, None] + np.arange(d)[None, :]) % d, np.array([1.0 / d]))[:, 0]
    clean = predictions(np.arange(d)[None], np.array([0.0]))[0, 0]
    std = broadcast_units(unit_std(f)[None], f.ndim)
    noisy = np.stack([np.stack([done.cut.head(f + np.float32(s) * std * np.random.default_rng(seed).standard_normal(
        f.shape, dtype=np.float32)).argmax(axis=1) for s in SCALES]) for seed in range(seeds)])

    out = {}
    g = np.random.default_rng(7)
    for n in [s for s in sizes if s < n_all]:
        values: dict[str, list[float]] = {k: [] for k in ("ablation", "ablation_fixed_orders", "noise",
                                                          "most_selective_first", "least_selective_first", "rho")}
        for _ in range(draws):
            rows = stratified_indices(n_all, fs.predictions, n, int(g.integers(1 << 30)))
            acc = (random_orders[:, :, rows] == ref[rows]).mean(axis=2)
            values["ablation"].append(normalized_auc(LEVELS, acc[g.choice(orders, 5, replace=False)].mean(axis=0)))
            values["ablation_fixed_orders"].append(normalized_auc(LEVELS, acc[:5].mean(axis=0)))
            noise = (noisy[g.integers(seeds)][:, rows] == ref[rows]).mean(axis=1)
            values["noise"].append(normalized_auc(SCALES, noise))
            ordered = (by_si[:, :, rows] == ref[rows]).mean(axis=2)
            values["most_selective_first"].append(normalized_auc(LEVELS, ordered[0]))
            values["least_selective_first"].append(normalized_auc(LEVELS, ordered[1]))
            importance = (clean[rows] == ref[rows]).mean() - (single[:, rows] == ref[rows]).mean(axis=1)
            rho = importance_correlation(si[units], importance)["spearman"]
            values["rho"].append(np.nan if rho is None else rho)
        out[n] = {k: (float(np.nanmean(v)), float(np.nanstd(v))) for k, v in values.items()}
    return {"case": f"{Path(str(model)).name} {layer} {'labels' if labels else 'no labels'}", "samples": n_all,
            "units": d, "by_n": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resnet", action="store_true", help="also ResNet-18's layer3 (builds it: needs torch)")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--sizes", default="500,250,125")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [(CNN, "sample", "/relu2/Relu_output_0", True), (CNN, "sample", "/relu2/Relu_output_0", False),
             (CNN, "sample", "/pool1/MaxPool_output_0", True)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.resnet:
            from bench import CONV_LAYER
            from bench import build as build_resnet

            build_resnet(Path(tmp), [2000])
            cases.append((Path(tmp) / "resnet18.onnx", str(Path(tmp) / "data2000.npz"), CONV_LAYER, False))
        for model, data, layer, labels in cases:
            result = study(model, data, layer, labels, args.orders, args.seeds, args.draws, sizes)
            print(f"{result['case']} ({result['samples']} samples, {result['units']} units): "
                  "mean / standard deviation over draws")
            for n, values in result["by_n"].items():
                print(f"  n {n:4d}: " + ", ".join(f"{k} {m:.3f}/{s:.4f}" for k, (m, s) in values.items()))


if __name__ == "__main__":
    main()
