"""Kernel IR transformations driven by memory layout (graphc/kernel.py; the others are in
graphc/kernel_sched.py), each returning a new, verified Kernel that stores the same values:

    collapse(k)              one loop for a perfect nest that walks every buffer contiguously
    redirect(k, old, new)    read buffer `new` where the kernel read `old` (same memory: in place)

The LLVM backend runs both on its loop kernels (tests/core/test_kernel_sched.py checks them
with the kernel-IR evaluator).
"""
from __future__ import annotations

from dataclasses import replace

from graphc import kernel as K
from graphc.kernel_sched import _kernel, _stmts


# ---- collapse: one loop for a perfect nest that walks memory contiguously ---------------------------
def _indexes(body):
    """Every index expression in body (stores, loads, random streams); None when the body
    has a bounds check (a check on one variable cannot follow a collapsed loop)."""
    out = []
    for s in body:
        if isinstance(s, K.Loop):
            inner = _indexes(s.body)
            if inner is None:
                return None
            out += inner
        elif isinstance(s, K.Store):
            out.append(s.index)
    for v in K.values([s for s in body if not isinstance(s, K.Loop)]):
        if isinstance(v, (K.Load, K.RandE)):
            out.append(v.index)
        if isinstance(v, K.InBounds):
            return None
    return out


def _collapsible(body, a: str, b: str, nb: int) -> bool:
    """Does every index use outer variable a and inner b only as c*(a*nb + b)? Then the pair
    is one loop over a*nb + b."""
    idx = _indexes(body)
    if idx is None:
        return False
    for e in idx:
        sa, sb = K.stride(e, a), K.stride(e, b)  # None: inside a division, modulo, min, max
        if sa is None or sb is None or sa != nb * sb:
            return False
    return True


def collapse(k: K.Kernel) -> K.Kernel:
    """Merge perfectly nested loops `for a < na: for b < nb` into one `for a < na*nb` where
    every access is linear in a*nb + b (contiguous along the pair), innermost pairs first.
    Why: LLVM does not vectorise a loop of fewer than 16 iterations, so an elementwise kernel
    over [64,6,14,14] ran its 14-long rows as scalar code; collapsed, it is one loop of
    75264 iterations (a parallel outer loop stays parallel, over the merged extent; one in
    pieces is not merged with its inner loop: its pieces' ranges must stay in one unit)."""
    pieces = sum(isinstance(s, K.Loop) and s.parallel for s in k.body) > 1

    def walk(body):
        out = []
        for s in body:
            if isinstance(s, K.Loop):
                s = replace(s, body=walk(s.body))
                if (len(s.body) == 1 and isinstance(s.body[0], K.Loop)
                        and not (s.parallel and pieces)
                        and not s.body[0].parallel
                        and _collapsible(s.body, s.var, s.body[0].var, s.body[0].extent)):
                    inner = s.body[0]
                    env = {s.var: K.Const(0), inner.var: K.Var(s.var)}
                    ext = {s.var: s.extent * inner.extent}
                    s = replace(s, extent=s.extent * inner.extent,
                                body=_stmts(inner.body, env, ext))
            out.append(s)
        return tuple(out)
    return _kernel(k, walk(k.body))


def redirect(k: K.Kernel, old: str, new: str) -> K.Kernel:
    """Reads of buffer `old` read buffer `new` instead, at the same index. For a kernel that
    writes its output over an input (in place): both names are the same memory, and once
    the kernel reads only through its output's name the backend may mark its pointers
    `noalias` (LLVM vectorises an in-place loop only behind a runtime overlap check, which
    two equal pointers fail: the loop ran scalar)."""
    buf = {b.name: b for b in k.args}
    src, dst = buf[old], buf[new]

    def value(v):
        if isinstance(v, K.Load):
            return K.Load(dst, v.index) if v.buffer == src else v
        if isinstance(v, K.RandE):
            return replace(v, key=value(v.key))
        if isinstance(v, K.Select):
            return K.Select(value(v.cond), value(v.a), value(v.b))
        if isinstance(v, (K.Unary, K.CastE)):
            return replace(v, x=value(v.x))
        if isinstance(v, K.Binary):
            return replace(v, a=value(v.a), b=value(v.b))
        return v

    def stmts(body):
        return tuple(replace(s, body=stmts(s.body)) if isinstance(s, K.Loop) else
                     replace(s, value=value(s.value)) if hasattr(s, "value") else s
                     for s in body)
    return _kernel(k, stmts(k.body))
