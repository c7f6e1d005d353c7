"""The lecture examples of part 1 (McCulloch-Pitts, perceptron, XOR, logistic and softmax
regression, MLP / CNN / ResNet on the 8x8 digits) run in --quick mode in-process, reach the
results their docstrings state, and write their pictures. Seeds are fixed (data split, init,
shuffling, dropout keys), so every run computes the same numbers."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from graphc import backends

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _load(name):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    spec = importlib.util.spec_from_file_location(f"examples_{name}",
                                                  os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(name, tmp_path, *extra):
    out = tmp_path / name
    metrics = _load(name).main(["--quick", "--out", str(out), *extra])
    pictures = metrics["pictures"]
    assert pictures, f"{name} drew no pictures"
    for p in pictures:
        p = str(p)
        assert p.startswith(str(out)) and os.path.isfile(p), p
        with open(p, encoding="utf-8") as f:
            text = f.read()
        if p.endswith(".svg"):
            assert "<svg" in text[:2000] and text.rstrip().endswith("</svg>"), p
        else:
            assert p.endswith(".dot") and text.lstrip().startswith("digraph"), p
    return metrics


def test_mcculloch_pitts(tmp_path):
    m = _run("mcculloch_pitts", tmp_path)
    for unit in ("AND", "OR", "NOR", "NOT", "XOR"):      # lecture 9.1, 9.6
        assert m[f"{unit}_accuracy"] == 1.0, unit
    assert m["threshold_gradient"] == 0.0                 # step'(x) = 0 (B.11)
    names = {os.path.basename(str(p)) for p in m["pictures"]}
    assert {"mcculloch_pitts.traced.svg", "mp_threshold_grad.backward.svg"} <= names


def test_perceptron_learns_and_or(tmp_path):
    m = _run("perceptron", tmp_path)
    for gate in ("AND", "OR"):                            # lecture 9.2: zero training errors
        assert m[f"{gate}_converged"] and m[f"{gate}_accuracy"] == 1.0, gate
    again = _load("perceptron").main(["--out", str(tmp_path / "again")])
    assert again["AND_weights"] == m["AND_weights"]       # seeded: the same run twice


@pytest.mark.parametrize("backend", backends.names())
def test_xor_perceptron_fails_mlp_succeeds(tmp_path, backend):
    usable, why = backends.available()[backend]
    if not usable:
        pytest.skip(f"backend {backend} is not available here: {why}")
    m = _run("xor", tmp_path, "--backend", backend)    # lecture 9.5: "on every backend"
    # lecture 9.2 / 9.3: the perceptron rule never classifies all four rows; it cycles
    assert not m["perceptron_converged"]
    assert m["perceptron_accuracy"] < 1.0 and m["perceptron_best_accuracy"] < 1.0
    assert m["perceptron_cycle"] is not None
    assert m["construction_accuracy"] == 1.0              # lecture 9.6: 2^n hidden perceptrons
    assert m["mlp_accuracy"] == 1.0                       # lecture 9.5: MLP 2-4-1, 100%
    assert m["mlp_loss"] < 0.05
    names = {os.path.basename(str(p)) for p in m["pictures"]}
    assert {f"xor_mlp_step.{s}.svg" for s in ("traced", "backward", "fused")} <= names


def test_logistic_regression_moons(tmp_path):
    m = _run("logistic_regression", tmp_path)
    assert m["grad_error"] < 1e-5                         # graphc's gradient = closed form
    # a linear boundary on the half-moons: good, never perfect
    assert 0.8 <= m["test_accuracy"] and 0.8 <= m["train_accuracy"] < 0.95


def test_logistic_regression_digits01(tmp_path):
    m = _run("logistic_regression", tmp_path, "--data", "digits01")
    assert m["grad_error"] < 1e-5
    assert m["test_accuracy"] == 1.0 and m["train_accuracy"] == 1.0


def test_softmax_regression_iris(tmp_path):
    m = _run("softmax_regression", tmp_path)
    assert m["grad_error"] < 1e-5                         # (softmax - onehot)^T x / n
    assert m["test_accuracy"] >= 0.9 and m["train_accuracy"] >= 0.9


def test_mlp_digits(tmp_path):
    m = _run("mlp_digits", tmp_path)
    assert m["test_accuracy"] >= 0.95


def test_cnn_digits(tmp_path):
    m = _run("cnn_digits", tmp_path)
    assert m["test_accuracy"] >= 0.95


def test_resnet_digits(tmp_path):
    m = _run("resnet_digits", tmp_path)
    assert m["test_accuracy"] >= 0.95
    names = {os.path.basename(str(p)) for p in m["pictures"]}
    assert "resnet_digits_step.backward.dot" in names
    assert "resnet_digits_forward.traced.svg" in names
