"""Kernel IR helpers for the OpenCL renderers (`opencl_matmul`, `opencl_vector`): which loop
variables a value reads, how an index moves with one of them, and the IR with loop variables
replaced by index expressions (a block's row, a vector's lane) and Lets inlined."""
from __future__ import annotations

from dataclasses import replace

from graphc import kernel as K, kernel_sched


def reads_output(x) -> bool:
    """Does a value, statement, body or kernel load the kernel's output buffer?"""
    return any(buf.role == "out" for buf in K.loads(x))


def subst_index(e, env: dict):
    """Index `e` with loop variables replaced (env: name -> index expression), folded."""
    return kernel_sched.subst(e, env, fold=True)


def subst(v, env: dict, lets: dict | None = None):
    """`v` with loop variables replaced (env: name -> index expression) and Refs to `lets`
    (name -> value) inlined."""
    if isinstance(v, K.Ref) and lets and v.name in lets:
        return subst(lets[v.name], env)
    if isinstance(v, (K.Load, K.RandE)):
        v = replace(v, index=subst_index(v.index, env))
        return replace(v, key=subst(v.key, env, lets)) if isinstance(v, K.RandE) else v
    if isinstance(v, K.InBounds):
        return K.InBounds(tuple((subst_index(e, env), lo, hi) for e, lo, hi in v.checks))
    if isinstance(v, K.Unary):
        return K.Unary(v.op, subst(v.x, env, lets))
    if isinstance(v, K.Binary):
        return K.Binary(v.op, subst(v.a, env, lets), subst(v.b, env, lets))
    if isinstance(v, K.Select):
        return K.Select(*(subst(x, env, lets) for x in (v.cond, v.a, v.b)))
    if isinstance(v, K.CastE):
        return K.CastE(subst(v.x, env, lets), v.dtype)
    return v   # Lit, AccRef, a Ref bound outside


def value_vars(v) -> set | None:
    """The loop variables a value reads; None when it reads an accumulator, a Let or `out`."""
    out = set()
    for x in K.walk(v):
        if isinstance(x, (K.AccRef, K.Ref)) or (isinstance(x, K.Load) and x.buffer.role == "out"):
            return None
        if isinstance(x, (K.Load, K.RandE)):
            out |= K.index_vars(x.index)
        if isinstance(x, K.InBounds):
            for e, _, _ in x.checks:
                out |= K.index_vars(e)
    return out


def unit_stride(v, var: str) -> bool:
    """Whether `v` is one load whose index moves by 1 when `var` does (contiguous in var)."""
    return isinstance(v, K.Load) and K.stride(v.index, var) == 1
