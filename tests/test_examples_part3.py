"""The lecture examples of part 3 (Sobel post-processing, GCN, autoencoder/RBM, bagging,
random hyperparameter search) run in --quick mode in-process and reach the results their
docstrings state. Seeds are fixed, so every run computes the same numbers."""
from __future__ import annotations

import os

from test_examples_part1 import _run


def test_sobel(tmp_path):
    m = _run("sobel", tmp_path)                              # lecture 1.21, 9.10
    assert m["shape"] == (6, 6) and m["max_abs_error"] < 1e-3
    assert m["normalised_matches"] and (m["normalised_min"], m["normalised_max"]) == (0, 255)


def test_gnn(tmp_path):
    m = _run("gnn", tmp_path)                                # lecture 4.24
    assert m["final_loss"] < 0.5 * m["first_loss"]
    assert m["test_accuracy"] >= 0.9 and m["test_accuracy"] > m["no_graph_accuracy"]


def test_autoencoder(tmp_path):
    m = _run("autoencoder", tmp_path)                        # lecture 4.25
    assert m["ae_final_mse"] < 0.5 * m["ae_initial_mse"]
    assert m["ae_final_mse"] < m["mean_image_mse"]
    assert m["rbm_final_error"] < 0.9 * m["rbm_first_error"]


def test_ensemble(tmp_path):
    m = _run("ensemble", tmp_path)                           # lecture 4.28, 7.29
    assert m["ensemble_accuracy"] >= m["mean_member_accuracy"]
    assert m["ensemble_accuracy"] > 0.9


def test_hparam_search(tmp_path):
    m = _run("hparam_search", tmp_path)                      # lecture 5.28
    best = min(m["trials"], key=lambda r: r["val_loss"])
    assert (m["best_lr"], m["best_hidden"]) == (best["lr"], best["hidden"])
    assert len({r["hidden"] for r in m["trials"]}) > 1 and m["test_accuracy"] > 0.9
    assert os.path.isfile(str(m["pictures"][0]))
