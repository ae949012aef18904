"""Training-time regularizers on the feature layer: AL2 (El Helou et al.) and NSR (Mao et al.).

These are the only torch modules of genaudit meant for *training* code: the audit itself never imports this
file (``import genaudit`` stays free of torch). Both act on the representation that feeds the final
classification layer, the same layer genaudit audits by default, and both push it towards what the audit
rewards: small activations (AL2, genaudit's ``magnitude`` diagnostic) and steady intra-class responses (NSR,
genaudit's ``steadiness`` diagnostic).

AL2, progressive activation loss
--------------------------------
Per mini-batch ``loss = lambda_e * L_r`` with ``L_r = mean over the batch of ||phi(x)||^2 / D`` (phi(x) the
sample's whole feature tensor, D its number of elements; the definition of genaudit/diagnostics/magnitude.py,
equal to the mean of the squared feature elements). The coefficient grows once per epoch:

    lambda_e = lambda_{e-1} * (1.1 * u[5 - lambda_{e-1}] + 1.01 * u[lambda_{e-1} - 5]),  lambda_0 = 0.01

Reading of the unit step at exactly lambda = 5: taken literally with the discrete-time convention u[0] = 1,
both steps fire and the factor would be 2.11, a jump nobody intends. The authors' reference code
(``get_map_weights`` in code/funnelNet_utils.py of github.com/majedelhelou/AL2) settles it: ``if lam < 5:
lam *= 1.1 else: lam *= 1.01``. So the growth is x1.1 while lambda < 5 and x1.01 once lambda >= 5 (exactly 5
grows by 1.01); lambda_e is the coefficient used *during* epoch e (epoch 0 uses lambda_0). From 0.01 the
fast phase lasts 66 epochs: lambda_65 = 0.01*1.1^65 = 4.90 < 5, lambda_66 = 5.39, then +1% per epoch.

NSR, neuron steadiness regularization
-------------------------------------
For a mini-batch with features F (N x D; conv maps are reduced to the channel's spatial mean, so a unit is a
channel) and labels y, the loss is ``lam * sum_n sum_c alpha_c Var(F_n | c)`` over the classes c present in
the batch, alpha_c = N_c / N their batch frequency. The slides (Mao et al.) split the variance as
``E[sum_c alpha_c X^2]`` (term 1, from the current mini-batch) minus ``sum_c alpha_c E^2[X_c]`` (term 2, the
class-conditional mean, from the *recent m mini-batches*). Implemented as the authors' code does it
(``train_stable.py`` of HaitaoMao/Neuron-with-Steady-Response-Leads-to-Better-Generalization, m = 5): the class
mean ``mu_c`` is estimated, without gradient, from the features of the last ``window`` mini-batches *including
the current one*, and the loss is the mean squared deviation of the current batch from it:

    sigma_n = (1/N) sum_i (F_{i,n} - mu_{y_i,n})^2 = sum_c alpha_c mean_{i in c} (F_{i,n} - mu_{c,n})^2

This equals term 1 - term 2 when the moving mean equals the batch's class mean, is never negative, and its
gradient 2(F - mu)/N pulls each response towards its class mean. (Term 1 - term 2 with a frozen term 2 would
have gradient 2F/N, a plain activation-shrinking penalty, and could go negative; that is not what the authors
train with.) Alternatively ``momentum=m`` replaces the window by exponential moving averages of the per-class
sums and counts (``S <- (1-m) S + m s_batch``, ``n <- (1-m) n + m n_batch``, ``mu = S / n``, the BatchNorm
convention: m = 1 uses the current batch only). The slides sum over neurons (``L_S = sum_n lambda sigma_n``);
the authors' code averages over them (``reduction="mean"``, so its lambda is D times larger). The state lives in
buffers (moved by ``.to()``, saved in ``state_dict``); ``reset()`` clears it, e.g. between training runs.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AL2", "NeuronSteadiness", "activation_loss", "al2_schedule", "al2_lambda"]


def al2_lambda(epoch: int, lambda0: float = 0.01, threshold: float = 5.0, fast: float = 1.1, slow: float = 1.01) -> float:
    """The AL2 coefficient lambda_epoch used during epoch ``epoch`` (0-based), starting from ``lambda0``."""
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    lam = float(lambda0)
    for _ in range(int(epoch)):
        lam *= fast if lam < threshold else slow
    return lam


def al2_schedule(epochs: int, lambda0: float = 0.01, threshold: float = 5.0, fast: float = 1.1, slow: float = 1.01) -> list[float]:
    """[lambda_0, ..., lambda_{epochs-1}]: the AL2 coefficient for each of ``epochs`` epochs.

    lambda_e = lambda_{e-1} * 1.1 while lambda_{e-1} < 5, else * 1.01 (exactly 5 grows by 1.01, as in the
    authors' code). ``al2_schedule(3) == [0.01, 0.011, 0.0121]``.
    """
    out: list[float] = []
    lam = float(lambda0)
    for _ in range(int(epochs)):
        out.append(lam)
        lam *= fast if lam < threshold else slow
    return out


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """AL2's L_r: mean over the batch of ||phi(x)||^2 / D (D = elements per sample), differentiable."""
    if features.dim() == 0 or features.shape[0] == 0:
        raise ValueError("features must have a non-empty batch dimension")
    flat = features.reshape(features.shape[0], -1)
    return flat.pow(2).sum(dim=1).div(flat.shape[1]).mean()


class AL2(nn.Module):
    """Progressive activation loss (AL2, El Helou et al., ICASSP 2020) on the feature layer.

    ``forward(features)`` returns ``lam * L_r``, L_r = mean over the batch of ||phi(x)||^2 / D, where the
    features are the input of the final classification layer. ``step_epoch()`` advances the schedule once per
    epoch (x1.1 while lam < 5, x1.01 from then on); ``lam`` is the current coefficient. The epoch counter is a
    buffer, so ``state_dict()`` / ``load_state_dict()`` resume the schedule.

    Example::

        al2 = AL2(lambda0=0.01)
        for epoch in range(epochs):
            for x, y in loader:
                features = trunk(x)                       # input of the last Linear
                loss = F.cross_entropy(head(features), y) + al2(features)
                opt.zero_grad(); loss.backward(); opt.step()
            al2.step_epoch()
    """

    def __init__(self, lambda0: float = 0.01, threshold: float = 5.0, fast: float = 1.1, slow: float = 1.01):
        super().__init__()
        if lambda0 < 0:
            raise ValueError("lambda0 must be >= 0")
        self.lambda0 = float(lambda0)
        self.threshold = float(threshold)
        self.fast = float(fast)
        self.slow = float(slow)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self._cache: tuple[int, float] | None = None
        self.last_activation_loss: torch.Tensor | None = None  # L_r of the last batch (detached), for logging

    @property
    def lam(self) -> float:
        """The coefficient lambda_e of the current epoch."""
        e = int(self.epoch)
        if self._cache is None or self._cache[0] != e:
            self._cache = (e, al2_lambda(e, self.lambda0, self.threshold, self.fast, self.slow))
        return self._cache[1]

    def step_epoch(self) -> float:
        """Advance the schedule by one epoch; returns the new coefficient."""
        self.epoch += 1
        return self.lam

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lr = activation_loss(features)
        self.last_activation_loss = lr.detach()
        return lr * self.lam

    def extra_repr(self) -> str:
        return f"lambda0={self.lambda0}, epoch={int(self.epoch)}, lam={self.lam:.6g}"


class NeuronSteadiness(nn.Module):
    """Neuron Steadiness Regularization (NSR, Mao et al., NeurIPS 2022) on one layer.

    ``forward(features, labels)`` returns ``lam * sum_n sum_c alpha_c Var(F_n | c)`` for the current batch,
    alpha_c = batch frequency of class c, the class means taken (without gradient) over the last ``window``
    mini-batches including this one (the slides' "term 2 from the recent m mini-batches"; the authors use
    m = 5), or, with ``momentum`` set, from exponential moving averages of the per-class sums and counts.
    Conv feature maps (N x C x H x W) are reduced to per-channel spatial means. ``reduction="mean"`` averages
    over neurons instead of summing (the authors' code). The running state is updated on every call in
    training mode only; in eval mode the stored state is used as is (with the batch's own class means for
    classes it has never seen). ``reset()`` clears it.

    Example::

        nsr = NeuronSteadiness(num_classes=10, lam=0.1)          # window of 5 mini-batches
        for x, y in loader:
            features = trunk(x)                                   # e.g. input of the last Linear
            loss = F.cross_entropy(head(features), y) + nsr(features, y)
            opt.zero_grad(); loss.backward(); opt.step()
    """

    def __init__(
        self,
        num_classes: int,
        lam: float = 1.0,
        momentum: float | None = None,
        window: int = 5,
        num_features: int | None = None,
        reduction: str = "sum",
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if momentum is not None and not 0.0 < momentum <= 1.0:
            raise ValueError("momentum must be in (0, 1]")
        if window < 1:
            raise ValueError("window must be >= 1")
        if reduction not in ("sum", "mean"):
            raise ValueError("reduction must be 'sum' or 'mean'")
        self.num_classes = int(num_classes)
        self.lam = float(lam)
        self.momentum = None if momentum is None else float(momentum)
        self.window = int(window)
        self.reduction = reduction
        self.num_features = num_features
        # window mode: per-slot class sums (K x C x D) and counts (K x C), a ring buffer over mini-batches;
        # momentum mode: one slot holding the exponential moving averages.
        self.register_buffer("class_sum", None)
        self.register_buffer("class_count", None)
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))
        if num_features is not None:
            self._allocate(int(num_features), torch.device("cpu"), torch.float32)

    @property
    def _slots(self) -> int:
        return 1 if self.momentum is not None else self.window

    def _allocate(self, d: int, device: torch.device, dtype: torch.dtype) -> None:
        self.num_features = d
        self.class_sum = torch.zeros(self._slots, self.num_classes, d, device=device, dtype=dtype)
        self.class_count = torch.zeros(self._slots, self.num_classes, device=device, dtype=dtype)
        self.cursor.zero_()

    def reset(self) -> None:
        """Forget the moving-average state (keeps the allocated size)."""
        if self.class_sum is not None:
            self.class_sum.zero_()
            self.class_count.zero_()
        self.cursor.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "class_sum"
        if self.class_sum is None and key in state_dict:
            t = state_dict[key]
            self._allocate(t.shape[-1], t.device, t.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def unit_values(features: torch.Tensor) -> torch.Tensor:
        """N x D unit responses: conv maps (N x C x ...) become per-channel spatial means."""
        if features.dim() < 2:
            raise ValueError("features must be N x D or N x C x H x W")
        return features.flatten(2).mean(dim=2) if features.dim() > 2 else features

    def class_means(self, batch_sum: torch.Tensor | None = None, batch_count: torch.Tensor | None = None) -> torch.Tensor:
        """C x D class means from the stored state (plus an optional batch not stored); NaN for unseen classes."""
        s = self.class_sum.sum(0) if self.momentum is None else self.class_sum[0]
        n = self.class_count.sum(0) if self.momentum is None else self.class_count[0]
        if batch_sum is not None:
            s, n = s + batch_sum, n + batch_count
        return s / n.unsqueeze(1)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        f = self.unit_values(features)
        labels = labels.reshape(-1).long()
        if len(labels) != len(f):
            raise ValueError(f"{len(f)} feature rows but {len(labels)} labels")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes})")
        n, d = f.shape
        if self.class_sum is None or self.class_sum.shape[-1] != d:
            self._allocate(d, f.device, f.dtype)
        fd = f.detach().to(self.class_sum.dtype)
        batch_sum = torch.zeros(self.num_classes, d, device=f.device, dtype=fd.dtype).index_add_(0, labels, fd)
        batch_count = torch.bincount(labels, minlength=self.num_classes).to(fd.dtype)
        with torch.no_grad():
            if self.training:
                if self.momentum is None:
                    slot = int(self.cursor) % self.window
                    self.class_sum[slot] = batch_sum
                    self.class_count[slot] = batch_count
                    self.cursor += 1
                else:
                    m = self.momentum
                    self.class_sum[0].mul_(1 - m).add_(batch_sum, alpha=m)
                    self.class_count[0].mul_(1 - m).add_(batch_count, alpha=m)
                means = self.class_means()
            else:
                means = self.class_means()
                unseen = ~torch.isfinite(means[:, 0]) if d else torch.zeros(self.num_classes, dtype=torch.bool)
                if bool(unseen.any()):
                    means[unseen] = (batch_sum / batch_count.clamp_min(1).unsqueeze(1))[unseen]
        residual = f - means[labels].to(f.dtype)
        sigma = residual.pow(2).mean(dim=0)  # per neuron: sum_c alpha_c mean_{i in c}(F - mu_c)^2
        total = sigma.sum() if self.reduction == "sum" else sigma.mean()
        return total * self.lam

    def extra_repr(self) -> str:
        state = f"momentum={self.momentum}" if self.momentum is not None else f"window={self.window}"
        return f"num_classes={self.num_classes}, lam={self.lam}, {state}, reduction={self.reduction!r}"
