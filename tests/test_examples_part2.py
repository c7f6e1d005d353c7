"""The training examples (optimisers, schedules, initialisation, batch norm and dropout,
recurrent networks, seq2seq with attention, regularisation) run in --quick mode in-process
and reach the results their docstrings state. Seeds are fixed, so the runs are
deterministic; each test checks that its pictures were written."""
from __future__ import annotations

import math
import os

import numpy as np

from test_examples_part1 import _load  # imports an example module by name


def _run(name, tmp_path, *extra):
    out = tmp_path / name
    metrics = _load(name).main(["--quick", "--out", str(out), *extra])
    for p in metrics["pictures"]:
        assert os.path.isfile(p) and os.path.getsize(p) > 5000, p
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return metrics


def test_optimizers(tmp_path):
    m = _run("optimizers", tmp_path)
    quad, rosen = m["toy"]["quadratic"], m["toy"]["rosenbrock"]
    # the ill-conditioned quadratic, 100 steps (lecture 9.21/9.22): momentum terms and Adam
    # beat plain gradient descent by orders of magnitude
    assert quad["SGD"] > 1.0
    for name in ("Momentum", "Nesterov", "Adam", "Adagrad", "RMSprop"):
        assert quad[name] < quad["SGD"] / 100, name
    assert rosen["Adam"] < rosen["SGD"] / 5
    assert rosen["Momentum"] < rosen["SGD"]
    # every optimiser trains the MLP; momentum beats plain SGD at the same LR
    for name, r in m["mlp"].items():
        assert r["test_acc"] > 0.6, name
    assert m["mlp"]["Momentum"]["train_loss"] < m["mlp"]["SGD"]["train_loss"]
    # Adagrad (9.24): the frequent, irrelevant feature gets the smallest step
    steps = m["adagrad_step_sizes"]
    assert steps[0] < min(steps[1], steps[2])


def test_schedules(tmp_path):
    m = _run("schedules", tmp_path)
    c = {k: np.array(v) for k, v in m["curves"].items()}
    base = 0.1
    assert np.allclose(c["constant"], base)
    assert math.isclose(c["multistep"][29], base) and math.isclose(c["multistep"][30], base / 10)
    assert math.isclose(c["multistep"][90], base / 1000)
    assert math.isclose(c["step"][40], base / 4)
    assert math.isclose(c["exponential"][10], base * math.exp(-0.3))
    assert math.isclose(c["1/t"][10], base / 2)
    assert math.isclose(c["1/sqrt(t)"][3], base / 2)
    assert math.isclose(c["cosine"][50], base / 2) and c["cosine"][99] < 1e-3
    assert math.isclose(c["linear"][50], base / 2)
    assert c["warmup+cosine"][0] == 0 and math.isclose(c["warmup+cosine"][10], base)
    tri, tri2 = c["cyclic (triangular)"], c["cyclic (triangular2)"]
    assert math.isclose(tri[10], base) and math.isclose(tri[30], base)
    assert math.isclose(tri[20], base / 10)
    assert math.isclose(tri2[30] - base / 10, (base - base / 10) / 2)   # amplitude halved
    sgdr = c["cosine restarts"]
    assert math.isclose(sgdr[25], base) and sgdr[24] < 0.01 and math.isclose(sgdr[50], base)
    for t, f, lr, ref in m["linear_floor"]:      # lecture 9.17's table
        assert math.isclose(lr, ref)
    for name, r in m["training"].items():
        assert r["test_acc"] > 0.9, name
        assert r["traces"] == 1, name            # the LR is a graph input: no retracing
    assert 1e-3 < m["range_test_lr"] < 1.0


def test_initialization(tmp_path):
    m = _run("initialization", tmp_path)
    tanh, relu = m["stats"]["tanh"], m["stats"]["relu"]
    # zeros: every activation and every hidden gradient is exactly 0
    assert max(tanh["zeros"]["std"]) == 0 and max(tanh["zeros"]["grad_norm"]) == 0
    # small normal 0.01: activations vanish geometrically
    for s in (tanh, relu):
        assert s["small normal"]["std"][-1] < 1e-6
        assert s["small normal"]["std"][-1] < 1e-4 * s["small normal"]["std"][0]
    # large normal: ReLU activations explode, tanh saturates (std near 1)
    assert relu["large normal"]["std"][-1] > 1e6
    assert tanh["large normal"]["std"][-1] > 0.9
    # Xavier keeps tanh activations in a healthy range; Kaiming keeps ReLU's (and tanh's)
    assert all(0.1 < v < 1.0 for v in tanh["Xavier"]["std"])
    assert all(0.3 < v < 1.0 for v in tanh["Kaiming"]["std"])
    assert all(0.3 < v < 3.0 for v in relu["Kaiming"]["std"])
    # Xavier halves ReLU's variance at every layer
    assert relu["Xavier"]["std"][-1] < 0.1 * relu["Kaiming"]["std"][-1]
    g = relu["Kaiming"]["grad_norm"]
    assert 0.1 < min(g) and max(g) < 10 * min(g)
    # symmetry: constant init keeps the hidden units identical, zeros never moves them
    sym = m["symmetry"]
    assert max(sym["zeros"]["row_spread"]) == 0
    assert max(sym["constant 0.1"]["row_spread"]) < 1e-4
    assert min(sym["Kaiming"]["row_spread"]) > 0.1
    assert sym["Kaiming"]["test_acc"] > 0.9
    assert sym["constant 0.1"]["test_acc"] < sym["Kaiming"]["test_acc"] - 0.3
    assert sym["zeros"]["test_acc"] < 0.2


def test_batchnorm_dropout(tmp_path):
    m = _run("batchnorm_dropout", tmp_path)
    for name, r in m["variants"].items():
        assert r["train_acc"] > 0.95 and r["test_acc"] > 0.9, name
    assert m["variants"]["batchnorm"]["test_acc"] >= m["variants"]["plain"]["test_acc"]
    d = m["dropout"]
    assert d["train_passes_differ"] > 0.1 and d["eval_passes_differ"] == 0
    assert d["train_mode_acc"] < d["eval_mode_acc"]
    e = m["dropout_expectation"]
    assert abs(e["inverted"] - e["full"]) < 0.01 * abs(e["full"])
    assert abs(e["plain"] - e["half"]) < 0.01 * abs(e["half"])
    bn = m["batchnorm"]
    assert bn["train_mode_batch_dependence"] > 1e-2 and bn["eval_mode_batch_dependence"] == 0
    assert bn["running_mean_error"] < 0.1 * bn["feature_std"]
    assert 0.8 < bn["running_var_ratio"] < 1.25


def test_rnn_sequence(tmp_path):
    m = _run("rnn_sequence", tmp_path)
    for name, r in m["models"].items():
        assert r["test_acc"] >= r["threshold"], (name, r)
    assert m["all_above_threshold"]


def test_seq2seq_attention(tmp_path):
    m = _run("seq2seq_attention", tmp_path)
    assert m["token_acc"] >= m["thresholds"]["token_acc"]
    assert m["anti_diagonal_argmax"] >= m["thresholds"]["anti_diagonal"]
    assert m["anti_diagonal_mass"] > 0.5
    w = np.array(m["attention_example"])
    assert np.allclose(w.sum(1), 1, atol=1e-5)
    L = len(w)
    # each row's weight on the anti-diagonal band beats the mean weight of the other columns
    band = [w[i, L - 1 - i] + (w[i, L - i] if i else 0) for i in range(L)]
    assert np.mean(band) > 3 / L
    assert m["ok"]


def test_regularization(tmp_path):
    m = _run("regularization", tmp_path)
    ex = m["lecture"]                          # lecture 9.18
    assert ex["W1"]["score"] == ex["W2"]["score"] == 2.0
    assert (ex["W1"]["l1"], ex["W2"]["l1"]) == (1.0, 1.75)
    assert (ex["W1"]["l2"], ex["W2"]["l2"]) == (1.0, 0.8125)
    assert m["prefer_l1"] == "W1" and m["prefer_l2"] == "W2"
    p = m["penalties"]
    assert p["L1"]["zero_fraction"] > 0.15
    assert p["L1"]["zero_fraction"] > 5 * max(p["none"]["zero_fraction"], p["L2"]["zero_fraction"])
    assert p["L2"]["l2"] < 0.7 * p["none"]["l2"] and p["L1"]["l1"] < 0.8 * p["none"]["l1"]
    assert all(r["test_acc"] > 0.93 for r in p.values())
    c = m["clipping"]
    assert c["no clipping"]["test_acc"] < 0.3 < 0.8 < c["clip_grad_norm 1.0"]["test_acc"]
