"""What every reported number means: one registry used by the report, the Markdown output and `genaudit explain`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str       # short name for `genaudit explain` and --fail-under (a scorecard path under diagnostics/)
    path: str       # dotted path in the scorecard
    label: str
    group: str      # robustness | class structure | magnitude | input-space | accuracy
    better: str     # "higher", "lower" or "" (descriptive)
    meaning: str    # one line for the report
    formula: str
    source: str
    reading: str    # how to read it

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.better, "·")


METRICS = [
    Metric("score", "score.value", "generalization score", "score", "higher",
           "predicted generalization in [0, 1], combining the diagnostics the validation study kept",
           "sigmoid(b + Σ_k w_k z_k), z_k oriented diagnostics, w_k ≥ 0 (genaudit/score_model.json)",
           "genaudit validation study (docs/validation.md): fitted on the MNIST zoo, evaluated on Fashion-MNIST",
           "Ranks models of one task; compare models rather than reading one value as an accuracy. "
           "See docs/validation.md for how well it ranks and where it fails."),
    Metric("clean_accuracy", "clean_accuracy", "clean accuracy", "accuracy", "higher",
           "fraction of the audited (training) samples classified correctly",
           "mean(argmax ψ(F) == y)", "—",
           "Training accuracy, not test accuracy. Near chance (1/classes) usually means wrong preprocessing."),
    Metric("ablation", "ablation.auc", "ablation AUC", "robustness", "higher",
           "accuracy kept as 0→100% of feature units are zeroed (random order), area relative to clean",
           "AUC = ∫₀¹ acc(p)/acc(0) dp, acc(p) with a random ⌊pD⌋ units zeroed, mean of R orders",
           "Morcos et al. 2018, 'On the importance of single directions for generalization'; AL2 (El Helou 2020)",
           "Networks that memorize rely on few directions and collapse early; a generalizing one degrades "
           "gracefully. Compare models of one architecture and data set: absolute values are not thresholds."),
    Metric("noise", "noise.auc", "noise AUC", "robustness", "higher",
           "accuracy kept as Gaussian noise up to 2σ of each unit is added, area relative to clean",
           "AUC = (1/s_max) ∫₀^s_max acc(s)/acc(0) ds, unit j perturbed by N(0, (s σ_j)²)",
           "Morcos et al. 2018",
           "Robustness to perturbing all units in random directions; lower for memorizing networks."),
    Metric("selectivity_ordered", "selectivity.ordered_ablation.most_selective_first.auc",
           "ablation AUC, selective first", "robustness", "",
           "ablation AUC when the most class-selective units go first (compare with random order)",
           "as ablation AUC, with units ordered by decreasing selectivity index",
           "Morcos et al. 2018",
           "Morcos found removing selective units first no more harmful than random: if this is much lower than "
           "the random-order AUC, the network leans on its selective units."),
    Metric("selectivity", "selectivity.mean", "class selectivity", "class structure", "",
           "mean class selectivity index: 0 = unit responds to all classes alike, 1 = to one class only",
           "SI = (μ_max − μ_−max)/(μ_max + μ_−max) over class-conditional mean activations",
           "Morcos et al. 2018",
           "Descriptive. Morcos found selectivity a poor predictor of a unit's importance (see importance ρ)."),
    Metric("mi_selectivity", "selectivity.mutual_information.mean", "MI selectivity", "class structure", "",
           "information a unit's on/off state carries about the class, as a fraction of class entropy",
           "I(class; unit > median) / H(class)", "Morcos et al. 2018 (mutual-information variant)",
           "Descriptive; with J balanced classes a binary state carries at most ln2/lnJ."),
    Metric("importance_rho", "selectivity.importance_correlation.spearman", "selectivity–importance ρ",
           "class structure", "",
           "Spearman correlation of unit selectivity with the accuracy lost when that unit alone is zeroed",
           "ρ_Spearman(SI_j, acc(0) − acc(without j))", "Morcos et al. 2018",
           "Morcos measured it near zero: selective units are not the important ones."),
    Metric("steadiness", "steadiness.ratio", "intra-class variance ratio", "class structure", "lower",
           "share of the units' variance that is within-class (Σ intra-class var / Σ total var)",
           "Σ_n Σ_c α_c Var(F_n | c) / Σ_n Var(F_n)", "Mao et al., Neuron Steadiness Regularization",
           "Lower = units respond steadily within a class; NSR lowers it and improves generalization."),
    Metric("consistency", "consistency.value", "consistency C", "class structure", "lower",
           "Davies–Bouldin index of the class clusters: spread relative to distance to the nearest rival class",
           "C = (1/J) Σ_i max_{j≠i} (S_i + S_j)/M_ij", "NSR lemma (Mao et al.); Natekar & Sharma (PGDL 2020)",
           "Lower = classes tight relative to their separation. NSR drives it towards 0."),
    Metric("perplexity", "perplexity.value", "layer perplexity / N_c", "class structure", "",
           "effective number of on/off activation patterns per class, relative to the class size",
           "mean_c e^{H(c)}/N_c, H(c) the entropy of class c's binary activation patterns",
           "Davel et al. 2020, 'DNNs as layers of cooperating classifiers'",
           "1 = every sample its own pattern; lower = samples of a class share codes. Descriptive: the paper "
           "gives no better side and on the sample models the memorizing MLP scored lower. Depends on N_c."),
    Metric("nodes", "nodes.accuracy", "nodes-as-classifiers accuracy", "class structure", "higher",
           "accuracy of a naive-Bayes vote of every unit's on/off state used as a class estimator",
           "argmax_c ln P(c) + Σ_n [ln P(c | s_n) − ln P(c)]", "Davel et al. 2020",
           "How much class information the layer's binary code carries, unit by unit (in-sample)."),
    Metric("magnitude", "magnitude.value", "activation magnitude L_r", "magnitude", "lower",
           "mean squared activation of the feature layer (scale-dependent: compare one architecture)",
           "L_r = mean_x ‖φ(x)‖² / D", "AL2 (El Helou, Dümbgen, Süsstrunk, ICASSP 2020)",
           "Memorizing networks grow large activations; AL2 penalizes L_r progressively."),
    Metric("input_noise", "input.noise.auc", "input-noise agreement AUC", "input-space", "higher",
           "prediction agreement with the clean model as Gaussian input noise grows to 0.5 σ_x, area",
           "(1/s_max) ∫ agree(s) ds, x + N(0, (s σ_x)²)", "PGDL predictors (agreement under perturbation)",
           "Reruns the whole model on a subsample. Lower = predictions flip under small input noise."),
    Metric("augmentation", "input.augmentation.mean", "augmentation agreement", "input-space", "higher",
           "share of predictions unchanged by 2-pixel shifts and ±10° rotations",
           "mean over augmentations of mean(pred(aug(x)) == pred(x))",
           "Natekar & Sharma (PGDL 2020): augmentation-based margins",
           "Reruns the whole model on a subsample. Lower = the model is unstable around its training points."),
]
BY_NAME = {m.name: m for m in METRICS} | {m.path: m for m in METRICS}
GROUPS = ["score", "accuracy", "robustness", "class structure", "magnitude", "input-space"]

# The metric that ranks models in `compare`, selects the best, and gates against a baseline.
PRIMARY = "score"
