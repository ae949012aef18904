"""The clutter study's pieces (zoo/build_realuse.cluttered, zoo/study_clutter.verdict), on hand-made inputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "zoo"))

_environment = dict(os.environ)
import build_realuse  # noqa: E402
import study_clutter  # noqa: E402  (through study_fresh_estimate, it sets OMP/BLAS thread counts for its workers)

os.environ.clear()
os.environ.update(_environment)  # the other tests' processes see the environment the suite started with


def test_a_blank_digit_is_pure_noise_and_the_same_seed_gives_the_same_images():
    blank = np.zeros((50, 1, 28, 28), np.uint8)
    first, again = build_realuse.cluttered(blank, 7), build_realuse.cluttered(blank, 7)
    assert first.shape == blank.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert 120 < first.mean() < 135  # uniform noise on [0, 255)
    assert not np.array_equal(first, build_realuse.cluttered(blank, 8))


def test_a_digit_stays_at_full_brightness_over_the_noise():
    """A 4 x 4 white square at the centre, rotated by at most 45 degrees and shifted by at most 4 pixels, keeps its
    middle at 255 whatever the noise under it (each pixel is the larger of the two)."""
    square = np.zeros((20, 1, 28, 28), np.uint8)
    square[:, :, 12:16, 12:16] = 255
    out = build_realuse.cluttered(square, 0)
    assert all((image[0] == 255).sum() >= 4 for image in out)


def _split(mae: float, tau: float | None = None) -> dict:
    return {"groups": {"all": {"mae": mae, "tau": tau}}}


def test_verdict_reads_each_criterion():
    """CIFAR-10 0.067 -> 0.048 (C1 met: below 0.050 and 0.019 less); fresh 0.050 -> 0.045 (C2 met); the sweep
    0.025 -> 0.031 rises by more than 0.005 (C3 not met although the noise zoo's τ holds); no never-fitted miss."""
    without = {study_clutter.CIFAR: _split(0.067), study_clutter.NOISE: _split(0.069, 0.831),
               "fit all but sweep -> eval sweep": _split(0.025)}
    with_ = {study_clutter.CIFAR: _split(0.048), study_clutter.NOISE: _split(0.070, 0.828),
             "fit all but sweep -> eval sweep": _split(0.031)}
    found = study_clutter.verdict(without, with_, ({"mae": 0.050}, {"mae": 0.045}), [])
    assert found["C1"] and found["C2"] and found["C4"]
    assert not found["C3"] and found["rises"] == ["fit all but sweep -> eval sweep: 0.025 -> 0.031"]


def test_verdict_wants_cifar_below_the_target_and_the_noise_tau_kept():
    """CIFAR-10 0.067 -> 0.055 is 0.012 less but above 0.050 (C1 not met); the noise zoo's τ 0.831 -> 0.820 falls by
    more than 0.005 (C3 not met)."""
    without = {study_clutter.CIFAR: _split(0.067), study_clutter.NOISE: _split(0.069, 0.831)}
    with_ = {study_clutter.CIFAR: _split(0.055), study_clutter.NOISE: _split(0.069, 0.820)}
    found = study_clutter.verdict(without, with_, ({"mae": 0.050}, {"mae": 0.050}), ["x"])
    assert not found["C1"] and not found["C2"] and not found["C3"] and not found["C4"]


def _record(noise: float) -> dict:
    """A record whose patch vote's label noise (consistency - the labels' agreement) is `noise`."""
    return {"card": {f"{study_clutter.S.PATCHES}.vote_consistency": 0.5 + noise,
                     f"{study_clutter.S.PATCHES}.reference_agreement": 0.5}}


def test_the_regime_is_noisy_from_three_standard_errors_of_label_noise():
    assert list(study_clutter.noisy([_record(0.0), _record(0.049), _record(0.05), _record(0.3)])) == \
        [False, False, True, True]


def test_r1_reads_each_model_with_its_regimes_fit(monkeypatch):
    """Two regimes with constant gaps 0.01 (clean) and 0.2 (noisy): each record gets its own regime's gap."""
    def constant(gap):
        return {"coefficients": {}, "intercept": gap}

    def fake_predict(model, records):
        n = len(records)
        return np.full(n, 1.0 - model["intercept"]), np.full(n, model["intercept"]), np.zeros(n)

    monkeypatch.setattr(study_clutter, "_predict", fake_predict)
    model = {"form": study_clutter.R1, "regimes": {"clean": constant(0.01), "noisy": constant(0.2)}}
    estimate, gap, widen = study_clutter.regime_predict(model, [_record(0.3), _record(0.0), _record(0.1)])
    np.testing.assert_allclose(gap, [0.2, 0.01, 0.2])
    np.testing.assert_allclose(estimate, [0.8, 0.99, 0.8])
    np.testing.assert_allclose(widen, 0.0)


def test_r2_gates_on_the_pixel_votes_reliability():
    """Pixel vote consistency 0.3 and 0.49 are no reliable reference (below 0.5, the published interval's
    threshold); 0.5 and 0.9 are."""
    records = [{"card": {"diagnostics.neighbours.input.vote_consistency": c}} for c in (0.3, 0.49, 0.5, 0.9)]
    assert list(study_clutter.weak(records)) == [True, True, False, False]
    gate, names = study_clutter.REGIMES[study_clutter.R2]
    assert gate is study_clutter.weak and names == ("reliable", "unreliable")


def test_never_fitted_records_carry_their_model_file_and_training_file(tmp_path, monkeypatch):
    """study_fresh_estimate.records, its audits cached: a checkpoint of zoo/fresh keeps the model file and the
    training .npz its manifest names, as the zoos' records do (the shift forms rerun the model on them)."""
    import json

    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "manifest.json").write_text(json.dumps([{
        "file": "a.onnx", "train_npz": "train_c30.npz", "dataset": "cifar10", "run": "a", "epoch": 2,
        "corruption": 30, "holdout_accuracy": 0.4}]))
    (tmp_path / "fresh_test.json").write_text(json.dumps({"fresh/a.onnx": {"card": {}, "published": 0.5}}))
    monkeypatch.setattr(study_clutter.F, "ZOO", tmp_path)
    monkeypatch.setattr(study_clutter.F, "CACHE", tmp_path)
    [record] = study_clutter.F.records(("fresh",), "fresh_test")
    assert record["name"] == "fresh/a.onnx" and record["holdout"] == 0.4
    assert record["file"] == str(tmp_path / "fresh" / "a.onnx")
    assert record["npz"] == str(tmp_path / "fresh" / "train_c30.npz")
