"""graphc.optim: update rules against hand-written NumPy, compiled == eager, convergence,
penalties and clipping, LR schedules against closed forms."""
import doctest
import math

import numpy as np
import pytest

import graphc as gc
from graphc import optim
from graphc.frontends import optim as optim_module
from graphc.frontends.pytree import flatten

N_STEPS = 4


# ---- a problem whose gradient is written by hand -----------------------------------------------
def _problem(dtype=np.float64, seed=0):
    """params {"w": (3, 4), "b": (4,)}; gradient of sum(a/2 θ² − c θ + 0.1 cos θ) per leaf."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(3, 4)).astype(dtype), "b": rng.normal(size=4).astype(dtype)}
    a = {k: rng.uniform(0.5, 2.0, v.shape).astype(dtype) for k, v in params.items()}
    c = {k: rng.normal(size=v.shape).astype(dtype) for k, v in params.items()}

    def grad(p):
        return {k: a[k] * p[k] - c[k] - 0.1 * np.sin(p[k]) for k in p}
    return params, grad


def _run(opt, params, grad, n=N_STEPS):
    """Drive the functional core for n steps; returns the params after each step."""
    state = opt.init(params)
    out = []
    for _ in range(n):
        params, state = opt.update(grad(params), state, params)
        out.append(params)
    return out


def _ref(leaf_rule, params, grad, n=N_STEPS):
    """Apply a hand-written per-leaf rule `(θ, g, t, mem) -> θ` (mem: a dict per leaf)."""
    mem = {k: {} for k in params}
    p = {k: v.copy() for k, v in params.items()}
    out = []
    for t in range(1, n + 1):
        g = grad(p)
        p = {k: leaf_rule(p[k], g[k], t, mem[k]) for k in p}
        out.append(p)
    return out


def _check(opt, rule, dtype=np.float64, rtol=1e-12):
    params, grad = _problem(dtype)
    got = _run(opt, params, grad)
    want = _ref(rule, params, grad)
    for step, (g, w) in enumerate(zip(got, want), 1):
        for k in w:
            assert g[k].dtype == dtype, (k, g[k].dtype)
            np.testing.assert_allclose(g[k], w[k], rtol=rtol, atol=1e-14,
                                       err_msg=f"{opt} step {step} leaf {k}")


# ---- SGD -----------------------------------------------------------------------------------
def sgd_rule(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    def rule(th, g, t, mem):
        g = g + weight_decay * th
        if momentum:
            # torch: the buffer starts as the first gradient, undamped
            mem["b"] = g.copy() if t == 1 else momentum * mem["b"] + (1 - dampening) * g
            g = g + momentum * mem["b"] if nesterov else mem["b"]
        return th - lr * g
    return rule


@pytest.mark.parametrize("kw", [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.5),
    dict(momentum=0.8, nesterov=True),
    dict(weight_decay=0.1),
    dict(momentum=0.9, weight_decay=0.05, nesterov=True),
    dict(momentum=0.5, dampening=0.5, weight_decay=0.01),
], ids=str)
def test_sgd_matches_hand_written_rule(kw):
    _check(optim.SGD(lr=0.1, **kw), sgd_rule(0.1, **kw))


def test_sgd_momentum_equals_lecture_form_for_constant_lr():
    # lectures 5.5 (a): v = γv + ηg, θ = θ − v  ==  torch form with v = lr·b (B.7)
    params, grad = _problem()
    got = _run(optim.SGD(lr=0.05, momentum=0.9), params, grad)
    th, v = params["w"].copy(), np.zeros_like(params["w"])
    p = dict(params)
    for step in range(N_STEPS):
        v = 0.9 * v + 0.05 * grad(p)["w"]
        th = th - v
        p = {"w": th, "b": got[step]["b"]}
        np.testing.assert_allclose(got[step]["w"], th, rtol=1e-12)


# ---- Adagrad ---------------------------------------------------------------------------------
def adagrad_rule(lr, eps=1e-10, weight_decay=0.0, initial_accumulator_value=0.0, lr_decay=0.0):
    def rule(th, g, t, mem):
        g = g + weight_decay * th
        mem["G"] = mem.get("G", np.full_like(th, initial_accumulator_value)) + g ** 2
        clr = lr / (1 + (t - 1) * lr_decay)
        return th - clr * g / (np.sqrt(mem["G"]) + eps)   # ε after the root (B.6)
    return rule


@pytest.mark.parametrize("kw", [
    dict(), dict(eps=1e-2), dict(weight_decay=0.1, initial_accumulator_value=0.5),
    dict(lr_decay=0.3),
], ids=str)
def test_adagrad_matches_hand_written_rule(kw):
    _check(optim.Adagrad(lr=0.3, **kw), adagrad_rule(0.3, **kw))


# ---- RMSprop ---------------------------------------------------------------------------------
def rmsprop_rule(lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    def rule(th, g, t, mem):
        g = g + weight_decay * th
        mem["v"] = alpha * mem.get("v", 0.0) + (1 - alpha) * g ** 2
        if centered:
            mem["gbar"] = alpha * mem.get("gbar", 0.0) + (1 - alpha) * g
            d = np.sqrt(mem["v"] - mem["gbar"] ** 2) + eps
        else:
            d = np.sqrt(mem["v"]) + eps
        if momentum > 0:
            mem["b"] = momentum * mem.get("b", 0.0) + g / d
            return th - lr * mem["b"]
        return th - lr * g / d
    return rule


@pytest.mark.parametrize("kw", [
    dict(), dict(alpha=0.9, eps=1e-3), dict(centered=True), dict(momentum=0.9),
    dict(centered=True, momentum=0.5, weight_decay=0.1),
], ids=str)
def test_rmsprop_matches_hand_written_rule(kw):
    _check(optim.RMSprop(lr=0.01, **kw), rmsprop_rule(0.01, **kw))


# ---- Adam / AdamW ----------------------------------------------------------------------------
def adam_rule(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False,
              amsgrad=False):
    b1, b2 = betas

    def rule(th, g, t, mem):
        if decoupled:
            th = th - lr * weight_decay * th
        else:
            g = g + weight_decay * th
        mem["m"] = b1 * mem.get("m", 0.0) + (1 - b1) * g
        mem["v"] = b2 * mem.get("v", 0.0) + (1 - b2) * g * g
        v = mem["v"]
        if amsgrad:
            v = mem["vmax"] = np.maximum(mem.get("vmax", 0.0), v)
        m_hat = mem["m"] / (1 - b1 ** t)   # t = 1 at the first step
        v_hat = v / (1 - b2 ** t)
        return th - lr * m_hat / (np.sqrt(v_hat) + eps)
    return rule


@pytest.mark.parametrize("kw", [
    dict(), dict(eps=1e-2), dict(betas=(0.5, 0.9)), dict(weight_decay=0.1),
    dict(amsgrad=True, betas=(0.8, 0.7)),
], ids=str)
def test_adam_matches_hand_written_rule(kw):
    _check(optim.Adam(lr=0.01, **kw), adam_rule(0.01, **kw), rtol=1e-10)


def test_adam_first_step_is_lr_times_sign():
    # with bias correction the first step is lr·g/(|g| + ε') ≈ lr·sign(g) whatever |g| is
    p = {"x": np.array([3.0, -2.0, 5.0])}
    g = {"x": np.array([1e-3, -40.0, 7.0])}
    opt = optim.Adam(lr=0.1)
    new, _ = opt.update(g, opt.init(p), p)
    np.testing.assert_allclose(new["x"], p["x"] - 0.1 * np.sign(g["x"]), rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=0.3), dict(weight_decay=0.1, amsgrad=True)],
                         ids=str)
def test_adamw_decoupled_decay(kw):
    wd = kw.pop("weight_decay", 1e-2)
    _check(optim.AdamW(lr=0.01, weight_decay=wd, **kw),
           adam_rule(0.01, weight_decay=wd, decoupled=True, **kw), rtol=1e-10)


def test_adamw_differs_from_adam_with_l2():
    params, grad = _problem()
    a = _run(optim.Adam(lr=0.01, weight_decay=0.5), params, grad)[-1]
    w = _run(optim.AdamW(lr=0.01, weight_decay=0.5), params, grad)[-1]
    assert not np.allclose(a["w"], w["w"])


def test_defaults_are_pytorch():
    assert optim.SGD().lr == 1e-3
    a = optim.Adam()
    assert (a.lr, a.betas, a.eps, a.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    assert optim.AdamW().weight_decay == 1e-2
    r = optim.RMSprop()
    assert (r.lr, r.alpha, r.eps, r.momentum, r.centered) == (1e-2, 0.99, 1e-8, 0.0, False)
    g = optim.Adagrad()
    assert (g.lr, g.eps, g.initial_accumulator_value) == (1e-2, 1e-10, 0.0)


# ---- dtype, purity, structure ----------------------------------------------------------------
ALL = [lambda: optim.SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
       lambda: optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
       lambda: optim.Adagrad(lr=0.1, lr_decay=0.01, weight_decay=0.01),
       lambda: optim.RMSprop(lr=0.01, centered=True, momentum=0.9, weight_decay=0.01),
       lambda: optim.Adam(lr=0.01, weight_decay=0.01, amsgrad=True),
       lambda: optim.AdamW(lr=0.01)]
IDS = ["sgd", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_float32_stays_float32_and_update_is_pure(make):
    params, grad = _problem(np.float32)
    opt = make()
    state = opt.init(params)
    p_before = [x.copy() for x in flatten(params)[0]]
    s_before = [x.copy() for x in flatten(state)[0]]
    for lr in (None, 0.01, np.float64(0.02), np.array(0.03)):  # numpy LRs must not promote
        new, new_state = opt.update(grad(params), state, params, lr=lr)
        assert all(v.dtype == np.float32 for v in new.values())
        assert new_state["step"].dtype == np.float64
        assert all(x.dtype == np.float32 for k, v in new_state.items() if k != "step"
                   for x in flatten(v)[0])
    for a, b in zip(flatten(params)[0] + flatten(state)[0], p_before + s_before):
        np.testing.assert_array_equal(a, b)                   # nothing was mutated


def test_state_layout_uses_torch_buffer_names():
    p = {"w": np.zeros((2, 2))}
    assert set(optim.SGD(momentum=0.9).init(p)) == {"step", "momentum_buffer"}
    assert set(optim.SGD().init(p)) == {"step"}
    assert set(optim.Adagrad(initial_accumulator_value=0.1).init(p)) == {"step", "sum"}
    np.testing.assert_array_equal(optim.Adagrad(initial_accumulator_value=0.1).init(p)["sum"]["w"],
                                  np.full((2, 2), 0.1))
    assert set(optim.RMSprop(centered=True, momentum=0.1).init(p)) == \
        {"step", "square_avg", "grad_avg", "momentum_buffer"}
    s = optim.Adam(amsgrad=True).init(p)
    assert set(s) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert s["step"].shape == () and s["step"].dtype == np.float64


def test_grads_matched_by_path_and_structure_errors():
    opt = optim.SGD(lr=0.5)
    p = {"w": np.ones(2), "b": np.zeros(1)}
    new, _ = opt.update({"b": np.ones(1), "w": np.full(2, 2.0)}, opt.init(p), p)  # other key order
    np.testing.assert_array_equal(new["w"], [0.0, 0.0])
    np.testing.assert_array_equal(new["b"], [-0.5])
    new, _ = opt.update((np.ones(2),), opt.init([np.ones(2)]), [np.ones(2)])   # tuple for list
    assert isinstance(new, list)
    with pytest.raises(ValueError, match="missing"):
        opt.update({"w": np.ones(2)}, opt.init(p), p)
    with pytest.raises(ValueError, match="init"):
        opt.update(p, None, p)


def test_invalid_hyperparameters():
    with pytest.raises(ValueError):
        optim.SGD(lr=0.1, nesterov=True)                       # needs momentum
    with pytest.raises(ValueError):
        optim.SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError):
        optim.Adam(betas=(1.0, 0.9))
    with pytest.raises(ValueError):
        optim.SGD(lr=-1.0)


# ---- stateful wrapper ----------------------------------------------------------------------
def test_stateful_step_matches_functional_and_updates_in_place():
    params, grad = _problem()
    want = _run(optim.Adam(lr=0.01), params, grad)
    w_array = params["w"]
    opt = optim.Adam(params, lr=0.01)
    for step in range(N_STEPS):
        out = opt.step(grad(opt.params))
        assert out is opt.params
        np.testing.assert_allclose(out["w"], want[step]["w"], rtol=1e-12)
    assert opt.params["w"] is w_array                 # written in place, like torch
    np.testing.assert_allclose(w_array, want[-1]["w"], rtol=1e-12)
    assert float(opt.state["step"]) == N_STEPS


def test_stateful_step_on_list_and_readonly_leaves():
    ro = np.ones(3)
    ro.setflags(write=False)
    opt = optim.SGD([ro, np.ones(2)], lr=0.5)
    out = opt.step([np.ones(3), np.ones(2)])
    assert out[0] is not ro and np.allclose(out[0], 0.5) and np.allclose(ro, 1.0)
    np.testing.assert_allclose(out[1], 0.5)


def test_step_without_params_explains():
    with pytest.raises(ValueError, match="init"):
        optim.SGD(lr=0.1).step({"w": np.ones(1)})


# ---- traced: one compiled graph for the whole training step -------------------------------
def _mlp_problem(dtype=np.float32):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 3)).astype(dtype)
    y = np.tanh(x @ rng.normal(size=(3, 1))).astype(dtype)
    p = {"w1": (rng.normal(size=(3, 5)) * 0.5).astype(dtype), "b1": np.zeros(5, dtype),
         "w2": (rng.normal(size=(5, 1)) * 0.5).astype(dtype), "b2": np.zeros(1, dtype)}

    def loss(p, x, y):
        h = gc.tanh(x @ p["w1"] + p["b1"])
        return ((h @ p["w2"] + p["b2"] - y) ** 2).mean()
    return p, x, y, loss


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_compiled_train_step_matches_eager(make):
    p0, x, y, loss = _mlp_problem()
    opt = make()

    @gc.compile
    def train_step(p, s, x, y, lr):
        l, g = gc.value_and_grad(loss)(p, x, y)
        p, s = opt.update(g, s, p, lr=lr)
        return p, s, l

    pc, sc = p0, opt.init(p0)
    pe, se = p0, opt.init(p0)
    lrs = [opt.lr, opt.lr * 0.5, opt.lr * 0.25, opt.lr * 0.1]
    for lr in lrs:
        pc, sc, lc = train_step(pc, sc, x, y, lr)
        le, g = gc.value_and_grad(loss)(pe, x, y)
        pe, se = opt.update(g, se, pe, lr=lr)
        np.testing.assert_allclose(lc, le, rtol=1e-5)
    assert len(train_step._cache) == 1                 # the float LR did not retrace
    for k in p0:
        assert pc[k].dtype == np.float32
        np.testing.assert_allclose(pc[k], pe[k], rtol=2e-5, atol=1e-6)
    for name in sc:
        for a, b in zip(flatten(sc[name])[0],
                        flatten(se[name])[0]):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_train_step_is_one_graph_with_params_and_state_in_and_out():
    p0, x, y, loss = _mlp_problem()
    opt = optim.Adam(lr=1e-2)
    step = gc.compile(lambda p, s, x, y, lr: opt.update(gc.grad(loss)(p, x, y), s, p, lr))
    s0 = opt.init(p0)
    step(p0, s0, x, y, 1e-2)
    g = step.graph()
    names = [n.attrs["name"] for n in g.inputs]
    assert "s_step" in names and "s_exp_avg_w1" in names and "p_w1" in names and "lr" in names
    # 4 params + (step + 2 buffers × 4) state leaves out
    assert len(g.outputs) == 4 + 1 + 8
    assert not any(n.op is gc.Op.GRAD for n in g.nodes)


def test_module_docstring_example_runs():
    res = doctest.testmod(optim_module, verbose=False)
    assert res.failed == 0 and res.attempted > 5


# ---- it actually optimises ---------------------------------------------------------------------
def _rosenbrock(p):
    return (1 - p["x"]) ** 2 + 100 * (p["y"] - p["x"] * p["x"]) ** 2


@pytest.mark.parametrize("opt,n", [
    (optim.Adam(lr=0.02), 3000),
    (optim.SGD(lr=1e-3, momentum=0.9), 3000),
    (optim.SGD(lr=1e-3, momentum=0.9, nesterov=True), 3000),
    (optim.AdamW(lr=0.02, weight_decay=0.0), 3000),
], ids=["adam", "momentum", "nesterov", "adamw"])
def test_minimises_rosenbrock(opt, n):
    step = gc.compile(lambda p, s, lr: opt.update(gc.grad(_rosenbrock)(p), s, p, lr))
    p = {"x": np.array(-1.5), "y": np.array(2.0)}
    s = opt.init(p)
    for _ in range(n):
        p, s = step(p, s, opt.lr)
    assert abs(float(p["x"]) - 1) < 1e-3 and abs(float(p["y"]) - 1) < 2e-3


@pytest.mark.parametrize("opt", [optim.SGD(lr=0.05), optim.Adagrad(lr=0.5), optim.RMSprop(lr=0.01),
                                 optim.Adam(lr=0.05)], ids=["sgd", "adagrad", "rmsprop", "adam"])
def test_minimises_ill_conditioned_quadratic(opt):
    # lectures 9.21: R(θ) = 10 θ1² + 0.5 θ2²
    f = lambda p: 10 * p[0] ** 2 + 0.5 * p[1] ** 2  # noqa: E731
    step = gc.compile(lambda p, s: opt.update(gc.grad(f)(p), s, p))
    p, s = [np.array(1.0), np.array(1.0)], opt.init([np.array(1.0), np.array(1.0)])
    for _ in range(500):
        p, s = step(p, s)
    assert float(f(p)) < 1e-4


# ---- penalties ---------------------------------------------------------------------------------
def test_penalties_values_and_gradients():
    w = {"a": np.array([[1.0, -2.0], [0.0, 3.0]]), "b": np.array([-0.5])}
    l1 = 0.3 * (1 + 2 + 0 + 3 + 0.5)
    l2 = 0.3 / 2 * (1 + 4 + 0 + 9 + 0.25)
    assert np.isclose(optim.l1_penalty(w, 0.3), l1)
    assert np.isclose(optim.l2_penalty(w, 0.3), l2)
    assert np.isclose(optim.elastic_net_penalty(w, 0.3, 0.3), l1 + l2)
    g1 = gc.grad(lambda p: optim.l1_penalty(p, 0.3))(w)
    np.testing.assert_allclose(g1["a"], 0.3 * np.sign(w["a"]))       # sign(0) = 0 (B.11)
    assert g1["a"][1, 0] == 0.0
    g2 = gc.grad(lambda p: optim.l2_penalty(p, 0.3))(w)
    np.testing.assert_allclose(g2["b"], 0.3 * w["b"])
    # lectures 9.18: L2 prefers the spread-out W2, L1 the sparse W1
    w1, w2 = np.array([0.0, 0, 1, 0]), np.array([0.5, 0.5, 0.25, 0.5])
    assert optim.l2_penalty([w2], 2.0) < optim.l2_penalty([w1], 2.0)
    assert optim.l1_penalty([w1], 1.0) < optim.l1_penalty([w2], 1.0)


def test_weight_decay_equals_l2_penalty_in_the_loss():
    p0, x, y, loss = _mlp_problem(np.float64)
    lam = 0.1
    coupled = optim.SGD(lr=0.1, momentum=0.9, weight_decay=lam)
    plain = optim.SGD(lr=0.1, momentum=0.9)
    pa, sa, pb, sb = p0, coupled.init(p0), p0, plain.init(p0)
    for _ in range(3):
        pa, sa = coupled.update(gc.grad(loss)(pa, x, y), sa, pa)
        pb, sb = plain.update(gc.grad(lambda p: loss(p, x, y) + optim.l2_penalty(p, lam))(pb),
                              sb, pb)
    for k in p0:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-10)


# ---- clipping --------------------------------------------------------------------------------
def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}          # global norm 5
    clipped, norm = optim.clip_grad_norm(g, 1.0)
    assert np.isclose(norm, 5.0)
    np.testing.assert_allclose(clipped["a"], [3.0 / (5 + 1e-6), 0.0])
    assert np.isclose(np.sqrt(sum((v ** 2).sum() for v in clipped.values())), 1.0, atol=1e-6)
    same, norm = optim.clip_grad_norm(g, 10.0)                         # below: unchanged
    np.testing.assert_array_equal(same["b"], g["b"])
    _, inf_norm = optim.clip_grad_norm(g, 1.0, norm_type=float("inf"))
    assert np.isclose(inf_norm, 4.0)
    _, l1 = optim.clip_grad_norm(g, 1.0, norm_type=1)
    assert np.isclose(l1, 7.0)
    g32 = {k: v.astype(np.float32) for k, v in g.items()}
    assert optim.clip_grad_norm(g32, 1.0)[0]["a"].dtype == np.float32


def test_clip_grad_norm_and_value_trace():
    g = {"a": np.array([3.0, -0.5], np.float32), "b": np.array([[4.0]], np.float32)}
    f = gc.compile(lambda g: optim.clip_grad_norm(g, 2.0))
    (cg, n), (eg, en) = f(g), optim.clip_grad_norm(g, 2.0)
    np.testing.assert_allclose(n, en, rtol=1e-6)
    np.testing.assert_allclose(cg["a"], eg["a"], rtol=1e-6)
    v = gc.compile(lambda g: optim.clip_grad_value(g, 1.0))(g)
    np.testing.assert_array_equal(v["a"], [1.0, -0.5])
    np.testing.assert_array_equal(v["b"], [[1.0]])
    np.testing.assert_array_equal(optim.clip_grad_value(g, 0.7)["a"], np.float32([0.7, -0.5]))


# ---- LR schedules ------------------------------------------------------------------------------
def _seq(sched, n):
    """The LRs seen by n epochs: the LR at construction, then after each step()."""
    out = [sched.get_last_lr()[0]]
    for _ in range(n - 1):
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def test_step_and_multistep():
    assert np.allclose(_seq(optim.StepLR(1.0, step_size=3, gamma=0.5), 8),
                       [1, 1, 1, .5, .5, .5, .25, .25])
    s = optim.MultiStepLR(0.1, milestones=[30, 60, 90], gamma=0.1)    # lectures 5.15
    assert [s.lr_at(t) for t in (0, 29, 30, 59, 60, 90, 200)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-4, 1e-4])


def test_exponential_and_lambda():
    k = 0.3
    s = optim.ExponentialLR(2.0, gamma=math.exp(-k))
    assert _seq(s, 6) == pytest.approx([2.0 * math.exp(-k * t) for t in range(6)])
    s = optim.LambdaLR(2.0, optim.inverse_time(k))                    # α0/(1 + kt)
    assert _seq(s, 6) == pytest.approx([2.0 / (1 + k * t) for t in range(6)])
    s = optim.LambdaLR(2.0, optim.inverse_sqrt())                     # α0/√t, t from 1
    assert _seq(s, 6) == pytest.approx([2.0 / math.sqrt(t) for t in range(1, 7)])


def test_cosine_annealing_closed_form():
    base, eta_min, T = 0.5, 0.01, 10
    s = optim.CosineAnnealingLR(base, T_max=T, eta_min=eta_min)
    want = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T)) / 2 for t in range(15)]
    assert _seq(s, 15) == pytest.approx(want)
    assert s.lr_at(T) == pytest.approx(eta_min)


def test_linear_lr_matches_lecture_table():
    # lectures 9.17: α^[t] = (1 − t/τ)α0 + (t/τ)ατ for t ≤ τ = 4, then ατ
    a0, at = 0.8, 0.2
    s = optim.LinearLR(a0, start_factor=1.0, end_factor=at / a0, total_iters=4)
    assert _seq(s, 7) == pytest.approx([a0, .75 * a0 + .25 * at, .5 * a0 + .5 * at,
                                        .25 * a0 + .75 * at, at, at, at])
    with pytest.raises(ValueError):
        optim.LinearLR(1.0, start_factor=0.0)                          # torch: start > 0
    assert optim.PolynomialLR(1.0, total_iters=4).lrs(6) == pytest.approx([1, .75, .5, .25, 0, 0])
    assert optim.ConstantLR(1.0, factor=0.5, total_iters=2).lrs(4) == pytest.approx([.5, .5, 1, 1])


def test_warmup_then_cosine():
    base, W, T = 1.0, 4, 8
    cos = optim.CosineAnnealingLR(base, T_max=T)
    s = optim.warmup(cos, warmup_iters=W)                              # from 0 (lectures 5.21)
    want = [t / W for t in range(W)] + [(1 + math.cos(math.pi * t / T)) / 2 for t in range(T + 1)]
    assert _seq(s, W + T + 1) == pytest.approx(want)
    # the torch recipe: SequentialLR(LinearLR warmup, cosine)
    opt = optim.SGD(lr=base)
    lin = optim.LinearLR(opt, start_factor=0.25, total_iters=W)
    cos = optim.CosineAnnealingLR(opt, T_max=T)
    seq = optim.SequentialLR(opt, [lin, cos], milestones=[W])
    assert opt.lr == pytest.approx(0.25)
    got = _seq(seq, W + 3)
    assert got[:W] == pytest.approx([0.25 + 0.75 * t / W for t in range(W)])
    assert got[W:] == pytest.approx([(1 + math.cos(math.pi * t / T)) / 2 for t in range(3)])
    assert opt.lr == pytest.approx(got[-1])


def test_cyclic_lr_triangular_and_triangular2():
    s = optim.CyclicLR(None, base_lr=0.1, max_lr=0.5, step_size_up=2)
    assert _seq(s, 9) == pytest.approx([.1, .3, .5, .3, .1, .3, .5, .3, .1])
    s = optim.CyclicLR(None, base_lr=0.1, max_lr=0.5, step_size_up=2, mode="triangular2")
    assert _seq(s, 13) == pytest.approx([.1, .3, .5, .3, .1, .2, .3, .2, .1, .15, .2, .15, .1])
    s = optim.CyclicLR(None, base_lr=0.0, max_lr=1.0, step_size_up=1, step_size_down=3)
    assert s.lrs(5) == pytest.approx([0, 1, 2 / 3, 1 / 3, 0])
    opt = optim.SGD(lr=7.0)
    optim.CyclicLR(opt, base_lr=0.1, max_lr=0.5, step_size_up=2)
    assert opt.lr == 0.1                                               # torch resets to base_lr


def test_cosine_warm_restarts():
    base = 1.0
    cos = lambda tc, ti: (1 + math.cos(math.pi * tc / ti)) / 2  # noqa: E731
    s = optim.CosineAnnealingWarmRestarts(base, T_0=3)
    assert _seq(s, 7) == pytest.approx([cos(t % 3, 3) for t in range(7)])
    s = optim.CosineAnnealingWarmRestarts(base, T_0=2, T_mult=2, eta_min=0.0)
    # periods 2, 4, 8: restarts at t = 2 and t = 6
    want = [cos(0, 2), cos(1, 2), cos(0, 4), cos(1, 4), cos(2, 4), cos(3, 4), cos(0, 8), cos(1, 8)]
    assert _seq(s, 8) == pytest.approx(want)


def test_scheduler_drives_stateful_optimizer():
    params = {"w": np.array([1.0])}
    opt = optim.SGD(params, lr=1.0)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    for epoch in range(3):
        assert opt.lr == 0.5 ** epoch
        before = params["w"].copy()
        opt.step({"w": np.array([1.0])})
        np.testing.assert_allclose(before - params["w"], 0.5 ** epoch)
        sched.step()
    assert opt.initial_lr == 1.0 and sched.last_epoch == 3
    # a second scheduler attached later starts from the initial LR, as in torch
    assert optim.ExponentialLR(opt, gamma=0.9).base_lr == 1.0


def test_schedule_table_and_last_epoch():
    s = optim.StepLR(0.1, step_size=2, gamma=0.1)
    assert s.lrs(5) == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    assert s.last_epoch == 0                                           # lr_at/lrs are pure
    resumed = optim.StepLR(0.1, step_size=2, gamma=0.1, last_epoch=3)
    assert resumed.last_epoch == 4 and resumed.last_lr == pytest.approx(0.001)


def test_warm_restarts_far_out_and_bad_first_arguments():
    s = optim.CosineAnnealingWarmRestarts(1.0, T_0=7)
    assert s.lr_at(10 ** 9) == pytest.approx((1 + math.cos(math.pi * (10 ** 9 % 7) / 7)) / 2)
    s = optim.CosineAnnealingWarmRestarts(1.0, T_0=1, T_mult=2)       # periods 1, 2, 4, ...
    assert s.lr_at(2 ** 40 - 1) == pytest.approx(1.0)                 # a restart
    with pytest.raises(TypeError, match="optimizer"):
        optim.CyclicLR(0.001, 0.1, 1.0)
    with pytest.raises(ValueError):
        optim.CosineAnnealingWarmRestarts(1.0, T_0=0)


def test_gc_optim_attribute_and_all():
    assert gc.optim.SGD is optim.SGD and gc.nn.init.zeros_ is not None
    for name in optim_module.__all__:
        assert hasattr(optim, name), name
