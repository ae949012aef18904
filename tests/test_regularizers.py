"""AL2 and NSR training regularizers (genaudit.training.regularizers): values by hand, schedule, gradients, state."""

from __future__ import annotations


import pytest

torch = pytest.importorskip("torch")

from genaudit.training.regularizers import AL2, NeuronSteadiness, activation_loss, al2_lambda, al2_schedule  # noqa: E402


def _sgd_step(module: "torch.nn.Module", lr: float) -> None:
    """Plain gradient descent (torch.optim's first step imports torch._dynamo: seconds, not wanted here)."""
    with torch.no_grad():
        for p in module.parameters():
            p -= lr * p.grad


# ------------------------------------------------------------------------------------------------ AL2


def test_al2_loss_hand_computed():
    f = torch.tensor([[1.0, 2.0, 0.0, 2.0], [0.0, 0.0, 3.0, 1.0]])
    # ||f1||^2/4 = 9/4, ||f2||^2/4 = 10/4; mean = 19/8
    assert activation_loss(f).item() == pytest.approx(19 / 8)
    al2 = AL2(lambda0=0.01)
    assert al2.lam == pytest.approx(0.01)
    assert al2(f).item() == pytest.approx(0.01 * 19 / 8)
    al2.step_epoch()
    assert al2(f).item() == pytest.approx(0.011 * 19 / 8)


def test_al2_conv_features_use_every_element():
    f = torch.zeros(2, 2, 2, 2)
    f[0, 0, 0, 0] = 4.0  # sample 0: 16 / 8 = 2; sample 1: 0
    assert activation_loss(f).item() == pytest.approx(1.0)


def test_al2_schedule_first_epochs():
    s = al2_schedule(5)
    assert s == pytest.approx([0.01, 0.011, 0.0121, 0.01331, 0.014641])
    al2 = AL2()
    seen = [al2.lam]
    for _ in range(4):
        seen.append(al2.step_epoch())
    assert seen == pytest.approx(s)
    assert al2_lambda(4) == pytest.approx(s[4])


def test_al2_schedule_crossing_five():
    s = al2_schedule(70)
    # x1.1 per epoch while lambda < 5: 0.01 * 1.1^65 = 4.9037 < 5, 0.01 * 1.1^66 = 5.3941 >= 5
    assert s[65] == pytest.approx(0.01 * 1.1**65) and s[65] < 5
    assert s[66] == pytest.approx(0.01 * 1.1**66) and s[66] >= 5
    assert s[67] == pytest.approx(0.01 * 1.1**66 * 1.01)
    assert s[69] == pytest.approx(0.01 * 1.1**66 * 1.01**3)
    assert all(b > a for a, b in zip(s, s[1:]))


def test_al2_schedule_exactly_five_grows_by_one_percent():
    # u[5 - 5] = u[5 - 5] = 1 literally would give 2.11; the authors' code grows by 1.01 from lambda >= 5
    assert al2_schedule(3, lambda0=5.0) == pytest.approx([5.0, 5.05, 5.1005])
    assert al2_schedule(2, lambda0=4.999) == pytest.approx([4.999, 4.999 * 1.1])


def test_al2_state_dict_resumes_schedule():
    a = AL2()
    for _ in range(7):
        a.step_epoch()
    b = AL2()
    b.load_state_dict(a.state_dict())
    assert b.lam == pytest.approx(al2_schedule(8)[7])


def test_al2_gradient_shrinks_activations():
    f = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]], requires_grad=True)
    al2 = AL2(lambda0=0.5)
    loss = al2(f)
    loss.backward()
    # d/dF of lam * mean_i ||F_i||^2 / D = lam * 2 F / (N D)
    assert torch.allclose(f.grad, 0.5 * 2 * f.detach() / 6)
    with torch.no_grad():
        stepped = f - 0.1 * f.grad
    assert stepped.norm(dim=1).lt(f.detach().norm(dim=1)).all()
    assert al2(stepped).item() < loss.item()


def test_al2_gradient_reaches_trunk_parameters():
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU())
    x = torch.randn(16, 5)
    al2 = AL2(lambda0=1.0)
    before = activation_loss(trunk(x)).item()
    for _ in range(20):
        trunk.zero_grad()
        al2(trunk(x)).backward()
        _sgd_step(trunk, lr=0.1)
    assert activation_loss(trunk(x)).item() < before


# ------------------------------------------------------------------------------------------------ NSR


def test_nsr_hand_computed_with_window_state():
    nsr = NeuronSteadiness(num_classes=2, lam=2.0, window=2)
    b1 = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    y1 = torch.tensor([0, 0, 1])
    # batch 1 alone: class 0 mean (2, 3), class 1 mean (5, 0)
    # sigma = (1/3) * [(1-2)^2 + (3-2)^2 + 0, (2-3)^2 + (4-3)^2 + 0] = (2/3, 2/3); sum 4/3; x lam 2
    assert nsr(b1, y1).item() == pytest.approx(2.0 * 4 / 3)
    assert int(nsr.cursor) == 1
    assert torch.equal(nsr.class_count.sum(0), torch.tensor([2.0, 1.0]))
    b2 = torch.tensor([[2.0, 2.0], [7.0, 1.0]])
    y2 = torch.tensor([0, 1])
    # window holds batches 1 and 2: class 0 mean over (1,2),(3,4),(2,2) = (2, 8/3); class 1 over (5,0),(7,1) = (6, .5)
    # sigma = (1/2) * [(2-2)^2 + (7-6)^2, (2-8/3)^2 + (1-.5)^2] = (1/2, 1/2 * (4/9 + 1/4))
    expected = 0.5 + 0.5 * (4 / 9 + 0.25)
    assert nsr(b2, y2).item() == pytest.approx(2.0 * expected)
    assert torch.allclose(nsr.class_means(), torch.tensor([[2.0, 8 / 3], [6.0, 0.5]]))
    b3 = torch.tensor([[4.0, 0.0]])
    y3 = torch.tensor([0])
    # batch 1 leaves the window of 2: class 0 mean over (2,2),(4,0) = (3, 1); sigma = (1, 1)
    assert nsr(b3, y3).item() == pytest.approx(2.0 * 2.0)
    nsr.reset()
    assert int(nsr.cursor) == 0 and float(nsr.class_count.sum()) == 0.0


def test_nsr_hand_computed_with_momentum_state():
    nsr = NeuronSteadiness(num_classes=2, lam=1.0, momentum=0.5)
    nsr(torch.tensor([[2.0], [4.0]]), torch.tensor([0, 0]))
    # S0 = .5 * 6 = 3, n0 = .5 * 2 = 1  (mean 3)
    loss = nsr(torch.tensor([[0.0], [6.0]]), torch.tensor([0, 1]))
    # S0 = .5*3 + .5*0 = 1.5, n0 = .5*1 + .5*1 = 1 -> mu0 = 1.5; mu1 = 6
    # sigma = (1/2) * [(0 - 1.5)^2 + 0] = 1.125
    assert loss.item() == pytest.approx(1.125)


def test_nsr_mean_reduction_divides_by_units():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    s = NeuronSteadiness(2, lam=1.0, reduction="sum")(f, y)
    m = NeuronSteadiness(2, lam=1.0, reduction="mean")(f, y)
    assert m.item() == pytest.approx(s.item() / 2)


def test_nsr_zero_when_classes_are_constant():
    nsr = NeuronSteadiness(num_classes=3, lam=1.0)
    f = torch.tensor([[1.0, 2.0, 3.0]] * 3 + [[0.0, -1.0, 5.0]] * 2 + [[7.0, 7.0, 7.0]] * 4)
    y = torch.tensor([0] * 3 + [2] * 2 + [1] * 4)
    assert nsr(f, y).item() == pytest.approx(0.0, abs=1e-6)
    assert nsr(f[[0, 3, 5, 1, 6]], y[[0, 3, 5, 1, 6]]).item() == pytest.approx(0.0, abs=1e-6)


def test_nsr_invariant_to_class_relabelling():
    torch.manual_seed(0)
    batches = [(torch.randn(12, 6), torch.randint(0, 4, (12,))) for _ in range(4)]
    perm = torch.tensor([2, 0, 3, 1])
    a = NeuronSteadiness(4, lam=0.3, window=3)
    b = NeuronSteadiness(4, lam=0.3, window=3)
    for f, y in batches:
        assert a(f, y).item() == pytest.approx(b(f, perm[y]).item(), rel=1e-6)


def test_nsr_conv_features_use_channel_spatial_mean():
    torch.manual_seed(0)
    f = torch.randn(8, 3, 4, 4)
    y = torch.randint(0, 2, (8,))
    a = NeuronSteadiness(2)(f, y)
    b = NeuronSteadiness(2)(f.mean(dim=(2, 3)), y)
    assert a.item() == pytest.approx(b.item())


def test_nsr_gradient_pulls_towards_class_mean():
    nsr = NeuronSteadiness(num_classes=2, lam=1.0)
    f = torch.tensor([[0.0], [2.0], [10.0]], requires_grad=True)
    nsr(f, torch.tensor([0, 0, 1])).backward()
    # class 0 mean 1: gradient 2 (F - mu) / N -> (-2/3, 2/3); class 1 alone: 0
    assert torch.allclose(f.grad, torch.tensor([[-2 / 3], [2 / 3], [0.0]]))


def _intra_class_variance(f: torch.Tensor, y: torch.Tensor) -> float:
    total = 0.0
    for c in y.unique():
        g = f[y == c]
        total += len(g) / len(f) * g.var(dim=0, unbiased=False).sum().item()
    return total


def test_nsr_optimization_reduces_intra_class_variance():
    torch.manual_seed(0)
    x = torch.randn(60, 8)
    y = torch.randint(0, 3, (60,))
    layer = torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.Tanh())
    nsr = NeuronSteadiness(num_classes=3, lam=1.0, window=2)
    before = _intra_class_variance(layer(x).detach(), y)
    for step in range(10):
        idx = torch.arange(step % 3 * 20, step % 3 * 20 + 20)
        layer.zero_grad()
        nsr(layer(x[idx]), y[idx]).backward()
        _sgd_step(layer, lr=0.2)
    after = _intra_class_variance(layer(x).detach(), y)
    assert after < 0.5 * before


def test_nsr_eval_mode_does_not_update_state():
    nsr = NeuronSteadiness(2, window=3)
    nsr(torch.tensor([[1.0], [3.0]]), torch.tensor([0, 1]))
    state = {k: v.clone() for k, v in nsr.state_dict().items()}
    nsr.eval()
    loss = nsr(torch.tensor([[2.0], [3.0]]), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(0.5 * 1.0)  # class 0 stored mean 1 -> (2-1)^2 / 2
    for k, v in nsr.state_dict().items():
        assert torch.equal(v, state[k])


def test_nsr_state_dict_round_trip_and_validation():
    a = NeuronSteadiness(3, window=2)
    a(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    b = NeuronSteadiness(3, window=2)
    b.load_state_dict(a.state_dict())
    assert torch.allclose(b.class_means(), a.class_means())
    with pytest.raises(ValueError):
        a(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError):
        NeuronSteadiness(3, momentum=0.0)

