"""Checking kernels of the kernel IR (`graphc/kernel.py`): `verify` (scoping, buffers,
dtypes) and `evaluate`, a slow element-by-element NumPy evaluator that raises on any
out-of-bounds access: an oracle for the lowering that shares nothing with a compiled backend.
"""
from __future__ import annotations

import numpy as np

from graphc.errors import VerifyError
from graphc.kernel import (BINARY_OPS, UNARY_OPS, AccRef, Accumulate, Add, Binary, Buffer,
                           CastE, Const, DefAcc, FloorDiv, InBounds, Kernel, Let, Lit, Load,
                           Loop, Max, Min, Mod, Mul, RandE, Ref, Select, Store, Unary, Var)
from graphc.ops import rand_bits
from graphc.types import DType


# ---- verification ---------------------------------------------------------------------------------
def verify(k: Kernel) -> Kernel:
    """Check that every loop variable is bound by an enclosing loop, every buffer is
    declared, every Ref/AccRef defined before use, and dtypes agree. Returns the kernel."""
    declared = {b.name: b for b in k.buffers}
    consts = dict(k.consts)

    def fail(msg):
        raise VerifyError(f"kernel {k.name}: {msg}", stage="lower")

    if len(declared) != len(k.buffers):
        fail("two buffers share a name")
    for b in k.buffers:
        if b.role not in ("in", "out", "const"):
            fail(f"buffer {b.name} has role {b.role!r}")
        if b.role == "const" and (b.name not in consts or consts[b.name].array.shape != b.shape
                                  or DType.of(consts[b.name].array) is not b.dtype):
            fail(f"const buffer {b.name} has no matching data")

    def buf(b: Buffer):
        if declared.get(b.name) != b:
            fail(f"buffer {b.name} is not declared as {b}")

    def index(e, vars_):
        if isinstance(e, Var):
            if e.name not in vars_:
                fail(f"loop variable {e.name} used outside its loop")
        elif isinstance(e, Const):
            if not isinstance(e.value, (int, np.integer)):
                fail(f"index constant {e.value!r} is not an int")
        elif isinstance(e, (Add, Mul, FloorDiv, Mod, Min, Max)):
            index(e.a, vars_)
            index(e.b, vars_)
        else:
            fail(f"not an index expression: {e!r}")

    def value(v, vars_, names) -> DType:
        if isinstance(v, Load):
            buf(v.buffer)
            index(v.index, vars_)
        elif isinstance(v, Lit):
            pass
        elif isinstance(v, Unary):
            if v.op not in UNARY_OPS:
                fail(f"unknown unary op {v.op}")
            value(v.x, vars_, names)
        elif isinstance(v, Binary):
            if v.op not in BINARY_OPS:
                fail(f"unknown binary op {v.op}")
            if value(v.a, vars_, names) is not value(v.b, vars_, names):
                fail(f"{v.op} of {v.a.dtype.name} and {v.b.dtype.name}: {v}")
        elif isinstance(v, Select):
            if value(v.cond, vars_, names) is not DType.bool:
                fail(f"select condition is not bool: {v}")
            if value(v.a, vars_, names) is not value(v.b, vars_, names):
                fail(f"select branches differ in dtype: {v}")
        elif isinstance(v, CastE):
            value(v.x, vars_, names)
        elif isinstance(v, RandE):
            if not value(v.key, vars_, names).is_int or not v.dtype.is_float:
                fail(f"rand needs an int key and produces floats: {v}")
            index(v.index, vars_)
        elif isinstance(v, InBounds):
            for e, _, _ in v.checks:
                index(e, vars_)
        elif isinstance(v, (AccRef, Ref)):
            if names.get(v.name) != (type(v), v.dtype):
                fail(f"{v.name} is used before it is defined (or with another dtype)")
        else:
            fail(f"not a value expression: {v!r}")
        return v.dtype

    def stmts(body, vars_, names):
        names = dict(names)  # definitions are visible after them in the same body and inside
        for s in body:
            if isinstance(s, Loop):
                if s.var in vars_:
                    fail(f"loop variable {s.var} rebound")
                if s.extent < 0:
                    fail(f"loop {s.var} has a negative extent")
                if s.parallel and vars_:
                    fail(f"parallel loop {s.var} inside another loop")
                stmts(s.body, vars_ | {s.var}, names)
            elif isinstance(s, Store):
                buf(s.buffer)
                if s.buffer.role != "out":
                    fail(f"store into {s.buffer.role} buffer {s.buffer.name}")
                index(s.index, vars_)
                if value(s.value, vars_, names) is not s.buffer.dtype:
                    fail(f"store of {s.value.dtype.name} into {s.buffer}")
            elif isinstance(s, DefAcc):
                names[s.name] = (AccRef, s.dtype)
            elif isinstance(s, Accumulate):
                if names.get(s.name, (None,))[0] is not AccRef:
                    fail(f"accumulator {s.name} is not defined")
                if s.op not in ("sum", "max") or value(s.value, vars_, names) is not names[s.name][1]:
                    fail(f"bad accumulate into {s.name}: {s.op} of {s.value.dtype.name}")
            elif isinstance(s, Let):
                names[s.name] = (Ref, value(s.value, vars_, names))
            else:
                fail(f"not a statement: {s!r}")

    stmts(k.body, frozenset(), {})
    par = [i for i, s in enumerate(k.body) if isinstance(s, Loop) and s.parallel]
    if par and par != list(range(par[0], par[-1] + 1)):
        fail("the pieces of the parallel loop are not consecutive")
    return k


# ---- a reference evaluator: the oracle for the lowering ----------------------------------------------
def _np_scalar(v, dtype: DType):
    return dtype.np.type(v)


def _ieval(e, env) -> int:
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, Var):
        return env[e.name]
    a, b = _ieval(e.a, env), _ieval(e.b, env)
    if isinstance(e, Add):
        return a + b
    if isinstance(e, Mul):
        return a * b
    if isinstance(e, FloorDiv):
        return a // b
    if isinstance(e, Mod):
        return a % b
    return min(a, b) if isinstance(e, Min) else max(a, b)


def _unary_np(op, x):
    from graphc.ops import OPS, Op
    return OPS[Op(op)].reference(np.asarray(x))[()]


def _binary_np(op, a, b):
    from graphc.ops import OPS, Op
    return OPS[Op(op)].reference(np.asarray(a), np.asarray(b))[()]


def _veval(v, env, mem):
    if isinstance(v, Load):
        i = _ieval(v.index, env)
        arr = mem[v.buffer.name]
        if not 0 <= i < arr.size:
            raise IndexError(f"out-of-bounds load {v.buffer.name}[{i}] (size {arr.size})")
        return arr[i]
    if isinstance(v, Lit):
        return _np_scalar(v.value, v.dtype)
    if isinstance(v, Unary):
        return _unary_np(v.op, _veval(v.x, env, mem))
    if isinstance(v, Binary):
        return _binary_np(v.op, _veval(v.a, env, mem), _veval(v.b, env, mem))
    if isinstance(v, Select):
        c, a, b = (_veval(x, env, mem) for x in (v.cond, v.a, v.b))  # both sides, as compiled
        return a if c else b
    if isinstance(v, CastE):
        return np.asarray(_veval(v.x, env, mem)).astype(v.dtype.np)[()]
    if isinstance(v, RandE):
        key = int(_veval(v.key, env, mem))
        i = _ieval(v.index, env)
        bits = rand_bits(key, i + 1)[i]
        return v.dtype.np.type(int(bits) >> 8) * v.dtype.np.type(2.0 ** -24)
    if isinstance(v, InBounds):
        return np.bool_(all(lo <= _ieval(e, env) < hi for e, lo, hi in v.checks))
    if isinstance(v, (AccRef, Ref)):
        return env[v.name]
    raise TypeError(f"not a value: {v!r}")


def _run(body, env, mem):
    for s in body:
        if isinstance(s, Loop):
            for i in range(s.extent):  # names are unique per kernel: one flat environment
                env[s.var] = i
                _run(s.body, env, mem)
        elif isinstance(s, Store):
            i = _ieval(s.index, env)
            if not 0 <= i < mem[s.buffer.name].size:
                raise IndexError(f"out-of-bounds store {s.buffer.name}[{i}]")
            mem[s.buffer.name][i] = _veval(s.value, env, mem)
        elif isinstance(s, DefAcc):
            env[s.name] = _np_scalar(s.init, s.dtype)
        elif isinstance(s, Accumulate):
            x = _veval(s.value, env, mem)
            env[s.name] = (_binary_np("add", env[s.name], x) if s.op == "sum"
                           else _binary_np("maximum", env[s.name], x))
        elif isinstance(s, Let):
            env[s.name] = _veval(s.value, env, mem)


def evaluate(kernel: Kernel, *arrays: np.ndarray) -> np.ndarray:
    """Run the kernel on its input arrays (in `kernel.args` order, output excluded) and
    return the output array. Slow (a Python loop per element): for tests on small shapes."""
    ins = [b for b in kernel.args if b.role == "in"]
    (out,) = [b for b in kernel.args if b.role == "out"]
    if len(arrays) != len(ins):
        raise ValueError(f"kernel {kernel.name} takes {len(ins)} inputs, got {len(arrays)}")
    mem = {b.name: np.ascontiguousarray(a, dtype=b.dtype.np).reshape(-1)
           for b, a in zip(ins, arrays)}
    mem.update({name: c.array.reshape(-1) for name, c in kernel.consts})
    mem[out.name] = np.zeros(out.size, out.dtype.np)
    with np.errstate(all="ignore"):
        _run(kernel.body, {}, mem)
    return mem[out.name].reshape(out.shape)
