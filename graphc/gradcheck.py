"""Gradient checking: analytic gradients (gc.value_and_grad, compiled on each backend)
against central finite differences of the same backend's forward function, per parameter and
backend (float64 where the backend has it).

    gradcheck(fn, args)           analytic gradients vs central finite differences, per
                                  parameter and backend
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphc.compare_base import (BackendChoice, _is_float_leaf, _num, float_argnums,
                                 resolve_backends, scalarized, supports_float64)
from graphc.errors import BackendError, GraphcError
from graphc.frontends import pytree
from graphc.frontends.api import Compiled, _arg_names, value_and_grad


@dataclass
class GradRow:
    backend: str
    param: str
    shape: tuple
    dtype: str
    max_err: float | None       # elementwise, norm-relative (None: tensor too large)
    dir_err: float               # worst directional derivative error
    ok: bool
    note: str = ""


@dataclass
class GradCheck:
    title: str
    rows: list[GradRow]
    unavailable: list[BackendChoice]
    settings: str

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self) -> str:
        w = max([len("param")] + [len(r.param) for r in self.rows])
        head = (f"  {'backend':<10}{'param':<{w}}  {'shape':<14}{'dtype':<9}{'max error':>10}"
                f"{'dir error':>11}  ok")
        lines = [self.title, f"  {self.settings}", head, "  " + "-" * (len(head) - 2)]
        for r in self.rows:
            me = "-" if r.max_err is None else _num(r.max_err)
            lines.append(f"  {r.backend:<10}{r.param:<{w}}  {str(r.shape):<14}{r.dtype:<9}"
                         f"{me:>10}{_num(r.dir_err):>11}  {'yes' if r.ok else 'NO'}"
                         + (f"  ({r.note})" if r.note else ""))
        for c in self.unavailable:
            lines.append(f"  {c.name:<10}unavailable: {c.why}")
        return "\n".join(l.rstrip() for l in lines)


def _to_float64(args):
    def cast(x):
        if _is_float_leaf(x) and not isinstance(x, float):
            return np.asarray(x, dtype=np.float64)
        return x
    return tuple(pytree.tree_map(cast, a) if _has_leaves(a) else a for a in args)


def _has_leaves(a) -> bool:
    try:
        return bool(pytree.flatten(a)[0])
    except GraphcError:
        return False


GRADCHECK = {  # dtype -> (relative step, pass threshold): central differences
    "float64": (1e-6, 1e-5),   # truncation ~h^2, rounding ~eps/h: ~1e-10 relative
    "float32": (3e-3, 2e-2),   # cbrt(eps): truncation and rounding both ~1e-5..1e-3
}


def gradcheck(fn: Callable, args, backends=None, *, argnums=None, directions: int = 3,
              elementwise_max: int = 64, float64: bool = True, seed: int = 0) -> GradCheck:
    """Analytic gradients (gc.value_and_grad, compiled on each backend) of every float argument
    against central finite differences of the same backend's compiled forward function.

    Tensors of at most `elementwise_max` elements are checked element by element; every tensor
    gets `directions` directional checks along random unit vectors u (grad . u against
    (f(x + h u) - f(x - h u)) / 2h). Inputs are cast to float64 where the backend supports it.
    A function that is not a float scalar is reduced by a fixed random projection first."""
    args = tuple(args)
    nums = tuple(argnums) if argnums is not None else float_argnums(args)
    if not nums:
        raise GraphcError(f"{getattr(fn, '__name__', 'fn')} has no float-array argument to "
                          f"differentiate", stage="gradcheck")
    names = _arg_names(fn, len(args))
    rows: list[GradRow] = []
    unavailable = []
    settings = set()
    for choice in resolve_backends(backends):
        if not choice.available:
            unavailable.append(choice)
            continue
        be = choice.backend
        use64 = float64 and supports_float64(be)
        a = _to_float64(args) if use64 else args
        try:
            rows += _gradcheck_one(fn, a, nums, names, choice.name, be, directions,
                                   elementwise_max, seed, settings)
        except BackendError:
            if not use64:
                raise
            rows += _gradcheck_one(fn, args, nums, names, choice.name, be, directions,
                                   elementwise_max, seed, settings)
    s = "; ".join(f"{d}: central differences, h = {GRADCHECK[d][0]:.0e} * max(1, |x|), ok "
                  f"below relative error {GRADCHECK[d][1]:.0e}" for d in sorted(settings))
    s += (f"\n  elementwise for tensors of up to {elementwise_max} elements; {directions} random "
          f"unit directions for every tensor")
    scalar = scalarized(fn, args)[1]
    title = f"gradcheck: {getattr(fn, '__name__', 'fn')}" + \
        ("" if scalar else " (projected to a scalar: sum of its float outputs times fixed "
                           "random weights)")
    return GradCheck(title, rows, unavailable, s)


def _gradcheck_one(fn, args, nums, names, bname, be, directions, elementwise_max, seed,
                   settings) -> list[GradRow]:
    f, _ = scalarized(fn, args)
    vg = value_and_grad(f, argnums=nums)
    fwd = Compiled(f, be)
    _, grads = Compiled(vg, be)(*args)
    leaves, tree, paths = pytree.flatten(tuple(args))
    sizes = [len(pytree.flatten(x)[0]) if _has_leaves(x) else 0 for x in args]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    gleaves = pytree.flatten(tuple(grads))[0]
    rng = np.random.default_rng(seed)

    def loss(new_leaves) -> float:
        return float(np.asarray(fwd(*pytree.unflatten(tree, new_leaves))))

    rows, k = [], 0
    for n in nums:
        for idx in range(offsets[n], offsets[n + 1]):
            x0 = np.asarray(leaves[idx])
            an = np.asarray(gleaves[k], dtype=np.float64)
            k += 1
            dt = x0.dtype.name
            settings.add(dt)
            rel_h, thresh = GRADCHECK.get(dt, GRADCHECK["float32"])
            path = paths[idx]
            rest = path.split(".", 1)[1] if "." in path else ""
            pname = names[n] + (f".{rest}" if rest else "")
            gscale = float(np.abs(an).max()) if an.size else 0.0
            floor = 1e-12 if dt == "float64" else 1e-6

            def at(x):
                new = list(leaves)
                new[idx] = np.asarray(x, dtype=x0.dtype).reshape(x0.shape)
                return loss(new)

            max_err = None
            if x0.size <= elementwise_max:
                fd = np.zeros(x0.size)
                flat = x0.astype(np.float64).ravel()
                for j in range(x0.size):
                    h = rel_h * max(1.0, abs(flat[j]))
                    xp, xm = flat.copy(), flat.copy()
                    xp[j] += h
                    xm[j] -= h
                    fd[j] = (at(xp) - at(xm)) / (2 * h)
                denom = max(gscale, float(np.abs(fd).max()), floor)
                max_err = float(np.abs(fd - an.ravel()).max()) / denom
            dir_err = 0.0
            base = x0.astype(np.float64)
            h = rel_h * max(1.0, float(np.abs(base).max()) if base.size else 1.0)
            for _ in range(directions):
                u = rng.standard_normal(x0.shape)
                nu = float(np.linalg.norm(u))
                u = u / nu if nu > 0 else u
                dan = float(np.sum(an * u))
                dfd = (at(base + h * u) - at(base - h * u)) / (2 * h)
                denom = max(abs(dan), abs(dfd), float(np.linalg.norm(an)) / np.sqrt(max(x0.size, 1)),
                            floor)
                dir_err = max(dir_err, abs(dfd - dan) / denom)
            ok = dir_err <= thresh and (max_err is None or max_err <= thresh)
            rows.append(GradRow(bname, pname, tuple(x0.shape), dt, max_err, dir_err, ok))
    return rows
