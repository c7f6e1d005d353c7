"""Schedule transformations on the kernel IR (`graphc/kernel.py`): each one takes a Kernel and
returns a new, verified Kernel that stores the same values, so each is a small, testable step
(tests compare `kernel_check.evaluate` before and after).

    split(k, var, factor)      tiling: `for v < n` -> `for v_o < n/f: for v_i < f` (+ a tail loop)
    reorder(k, outer, inner)   swap two perfectly nested loops
    unroll(k, var)             replace a loop by copies of its body, one per iteration
    partition(k)               split a loop where a bounds check or clamp changes its answer
    simplify(k)                fold index arithmetic, bounds checks and selects by loop ranges

Two more, driven by memory layout, are in graphc/kernel_layout.py: `collapse` (one loop for
a nest that walks every buffer contiguously) and `redirect` (in-place reads).

Why `partition` matters: a concatenation, a padding or its gradient lowers to one loop whose
body asks, for every element, which piece it is in (`(256 <= i1 < 384) ? ... : 0.0`) and clamps
each piece's index (`min(max(i1 - 256, 0), 127)`). Both sides of every select are computed,
so an LSTM's gate gradient evaluated all four gates' math for each element. Partitioned at
i1 = 128, 256, 384, each piece's checks are constant: the selects and clamps fold away and each
piece computes only its own gate (W3 of benchmarks/workloads.py). This is loop partitioning
(index-set splitting) as in Halide and polyhedral compilers.

Vectorising the innermost loop and parallelising the outermost are left to the backends:
the lowering marks the outer loop `parallel` (the LLVM backend splits it over threads, the
OpenCL backend maps it to work-items) and LLVM's loop vectoriser handles the inner loop.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from graphc import kernel as K
from graphc.kernel_check import verify
from graphc.types import DType


# ---- index expressions: substitute, simplify, evaluate over a range --------------------------------
def subst(e: K.Index, env: dict[str, K.Index], fold: bool = False) -> K.Index:
    """e with each variable named in env replaced; fold: sums and products by a constant
    through the smart constructors (`K.add`, `K.mul`), which need no loop extents."""
    if isinstance(e, K.Var):
        return env.get(e.name, e)
    if isinstance(e, K.Const):
        return e
    a, b = subst(e.a, env, fold), subst(e.b, env, fold)
    if fold and isinstance(e, K.Add):
        return K.add(a, b)
    if fold and isinstance(e, K.Mul) and isinstance(b, K.Const):
        return K.mul(a, b.value)
    return type(e)(a, b)


def simplify_index(e: K.Index, ext: dict[str, int]) -> K.Index:
    """Fold e with the smart constructors of graphc.kernel, given the loop extents."""
    if isinstance(e, (K.Var, K.Const)):
        return e
    a, b = simplify_index(e.a, ext), simplify_index(e.b, ext)
    if isinstance(e, K.Add):
        return K.add(a, b)
    if isinstance(e, K.Mul):
        return K.mul(a, b.value) if isinstance(b, K.Const) else (
            K.mul(b, a.value) if isinstance(a, K.Const) else K.Mul(a, b))
    if isinstance(e, (K.FloorDiv, K.Mod)) and isinstance(b, K.Const) and b.value > 0:
        lo, _ = K.bounds(a, ext)
        if lo >= 0:
            return (K.floordiv if isinstance(e, K.FloorDiv) else K.mod)(a, b.value, ext)
        return type(e)(a, b)
    if isinstance(e, (K.Min, K.Max)):
        (al, ah), (bl, bh) = K.bounds(a, ext), K.bounds(b, ext)
        first = ah <= bl if isinstance(e, K.Min) else al >= bh  # a always wins
        second = bh <= al if isinstance(e, K.Min) else bl >= ah
        return a if first else b if second else type(e)(a, b)
    return type(e)(a, b)


def eval_range(e: K.Index, var: str, n: int) -> np.ndarray:
    """e at var = 0..n-1 (e has no other free variable)."""
    if isinstance(e, K.Const):
        return np.full(n, e.value, np.int64)
    if isinstance(e, K.Var):
        return np.arange(n, dtype=np.int64)
    a, b = eval_range(e.a, var, n), eval_range(e.b, var, n)
    ops = {K.Add: np.add, K.Mul: np.multiply, K.FloorDiv: np.floor_divide, K.Mod: np.mod,
           K.Min: np.minimum, K.Max: np.maximum}
    return ops[type(e)](a, b)


# ---- values and statements: one rewriter for substitution and folding --------------------------------
def _value(v, env, ext, rename=None):
    """v with variables substituted (env), folded by the loop ranges (ext), and Refs
    renamed (unrolled copies of a body get their own Let names)."""
    if isinstance(v, K.Load):
        return K.Load(v.buffer, simplify_index(subst(v.index, env), ext))
    if isinstance(v, K.RandE):
        return K.RandE(_value(v.key, env, ext, rename),
                       simplify_index(subst(v.index, env), ext), v.dtype)
    if isinstance(v, K.InBounds):
        checks = []
        for e, lo, hi in v.checks:
            e = simplify_index(subst(e, env), ext)
            el, eh = K.bounds(e, ext)
            if eh < lo or el >= hi:
                return K.Lit(False, DType.bool)
            if not (lo <= el and eh < hi):
                checks.append((e, lo, hi))
        return K.InBounds(tuple(checks)) if checks else K.Lit(True, DType.bool)
    if isinstance(v, K.Select):
        c = _value(v.cond, env, ext, rename)
        if isinstance(c, K.Lit):
            return _value(v.a if c.value else v.b, env, ext, rename)
        return K.Select(c, _value(v.a, env, ext, rename), _value(v.b, env, ext, rename))
    if isinstance(v, K.Unary):
        return K.Unary(v.op, _value(v.x, env, ext, rename))
    if isinstance(v, K.Binary):
        return K.Binary(v.op, _value(v.a, env, ext, rename), _value(v.b, env, ext, rename))
    if isinstance(v, K.CastE):
        return K.CastE(_value(v.x, env, ext, rename), v.dtype)
    if isinstance(v, K.Ref) and rename:
        return K.Ref(rename.get(v.name, v.name), v.dtype)
    return v  # Lit, Ref, AccRef


def _stmts(body, env, ext, rename=None) -> tuple:
    out = []
    for s in body:
        if isinstance(s, K.Loop):
            inner = {**ext, s.var: s.extent}
            out.append(replace(s, body=_stmts(s.body, env, inner, rename)))
        elif isinstance(s, K.Store):
            out.append(K.Store(s.buffer, simplify_index(subst(s.index, env), ext),
                               _value(s.value, env, ext, rename)))
        elif isinstance(s, K.Let):
            out.append(K.Let(rename.get(s.name, s.name) if rename else s.name,
                             _value(s.value, env, ext, rename)))
        elif isinstance(s, K.Accumulate):
            out.append(K.Accumulate(s.name, s.op, _value(s.value, env, ext, rename)))
        else:
            out.append(s)
    return _drop_dead_lets(tuple(out))


def _drop_dead_lets(body: tuple) -> tuple:
    """Lets that nothing reads any more (their select branch folded away): a load or a call
    to exp is not free, and LLVM cannot always prove a math call dead."""
    while True:
        used = {v.name for v in K.values(body) if isinstance(v, K.Ref)}
        kept = tuple(s for s in body if not (isinstance(s, K.Let) and s.name not in used))
        if len(kept) == len(body):
            return body
        body = kept


def _kernel(k: K.Kernel, body) -> K.Kernel:
    return verify(replace(k, body=tuple(body)))


def simplify(k: K.Kernel) -> K.Kernel:
    """Fold index arithmetic, bounds checks, selects and dead Lets given the loop extents."""
    return _kernel(k, _stmts(k.body, {}, {}))


# ---- the transformations ----------------------------------------------------------------------------
def _at(body, var: str, fn):
    """body with the loop over `var` replaced by fn(loop) (a tuple of statements)."""
    out = []
    for s in body:
        if isinstance(s, K.Loop):
            if s.var == var:
                out.extend(fn(s))
                continue
            s = replace(s, body=_at(s.body, var, fn))
        out.append(s)
    return tuple(out)


def _find(body, var: str):
    for s in body:
        if isinstance(s, K.Loop):
            if s.var == var:
                return s
            got = _find(s.body, var)
            if got is not None:
                return got
    return None


def _need(k: K.Kernel, var: str) -> K.Loop:
    lp = _find(k.body, var)
    if lp is None:
        raise ValueError(f"kernel {k.name} has no loop over {var!r}")
    return lp


def split(k: K.Kernel, var: str, factor: int) -> K.Kernel:
    """Tile the loop over `var` by `factor`: an outer loop `var_o` over whole tiles and an
    inner `var_i` < factor (`var = var_o*factor + var_i`), then a tail loop for the rest.
    A parallel loop stays parallel on its outer part."""
    lp = _need(k, var)
    if factor < 1:
        raise ValueError("split factor must be >= 1")
    whole, tail = divmod(lp.extent, factor)

    def tile(s: K.Loop):
        vo, vi = f"{var}_o", f"{var}_i"
        env = {var: K.add(K.mul(K.Var(vo), factor), K.Var(vi))}
        inner = K.Loop(vi, factor, _stmts(s.body, env, {vo: whole, vi: factor}))
        out = [K.Loop(vo, whole, (inner,), s.parallel)] if whole else []
        if tail:
            env = {var: K.add(K.Var(f"{var}_t"), K.Const(whole * factor))}
            out.append(K.Loop(f"{var}_t", tail, _stmts(s.body, env, {f"{var}_t": tail})))
        return tuple(out)
    return _kernel(k, _at(k.body, var, tile))


def reorder(k: K.Kernel, outer: str, inner: str) -> K.Kernel:
    """Swap `outer` and the loop `inner` directly and only inside it (a perfect nest).
    Legal when the body's iterations are independent (elementwise stores; not an
    accumulation whose init sits between the loops, which the perfect nest excludes)."""
    lo = _need(k, outer)
    if len(lo.body) != 1 or not isinstance(lo.body[0], K.Loop) or lo.body[0].var != inner:
        raise ValueError(f"{inner!r} is not the only statement inside {outer!r}")
    li = lo.body[0]
    return _kernel(k, _at(k.body, outer, lambda s: (
        replace(li, body=(replace(s, body=li.body, parallel=False),), parallel=s.parallel),)))


def unroll(k: K.Kernel, var: str) -> K.Kernel:
    """Replace the loop over `var` by one copy of its body per iteration (Let names get a
    suffix per copy), with `var` a constant that folds into the indices."""
    _need(k, var)

    def copies(s: K.Loop):
        out = []
        lets = [t.name for t in _all_lets(s.body)]
        for i in range(s.extent):
            rename = {n: f"{n}_{var}{i}" for n in lets}
            out.extend(_stmts(s.body, {var: K.Const(i)}, {}, rename))
        return tuple(out)
    return _kernel(k, _at(k.body, var, copies))


def _all_lets(body):
    for s in body:
        if isinstance(s, K.Let):
            yield s
        elif isinstance(s, K.Loop):
            yield from _all_lets(s.body)


def _decisions(body, var: str, acc: list):
    """Index expressions in body over `var` alone whose answer can change along the loop:
    bounds checks (e, lo, hi) and min/max clamps."""
    def idx(e):
        if isinstance(e, (K.Min, K.Max)) and K.index_vars(e) == {var}:
            acc.append(e)
        if not isinstance(e, (K.Var, K.Const)):
            idx(e.a)
            idx(e.b)

    for s in body:
        if isinstance(s, K.Loop):
            _decisions(s.body, var, acc)
            continue
        if isinstance(s, K.Store):
            idx(s.index)
        for v in K.values(s):
            if isinstance(v, (K.Load, K.RandE)):
                idx(v.index)
            if isinstance(v, K.InBounds):
                for e, lo, hi in v.checks:
                    if K.index_vars(e) == {var}:
                        acc.append((e, lo, hi))
                    idx(e)
    return acc


def _window(d, var: str, n: int):
    """Where a clamp min(a, b) / max(a, b) over `var` switches sides: (p, q) such that a cut
    anywhere in p..q leaves each piece on one side (a == b in between fits both); None when
    it never switches or switches back and forth."""
    a, b = eval_range(d.a, var, n), eval_range(d.b, var, n)
    lt, gt = a < b, a > b
    for first, second in ((lt, gt), (gt, lt)):
        if first.any() and second.any():
            p, q = int(np.flatnonzero(first)[-1]) + 1, int(np.flatnonzero(second)[0])
            if p <= q:
                return p, q
    return None


def _cuts(body, var: str, n: int, max_pieces: int, total: int) -> list[int]:
    """Loop positions where some decision changes, at most `total` - 1;
    a bounds check that changes more often than max_pieces (a parity test, `i % 2`) is left
    to the code, and so is a clamp that switches back and forth. A clamp adds a cut only
    where no other cut already serves."""
    cuts: set[int] = set()
    windows = []
    for d in _decisions(body, var, []):
        if isinstance(d, tuple):
            e, lo, hi = d
            x = eval_range(e, var, n)
            ans = (x >= lo) & (x < hi)
            at = (np.flatnonzero(ans[1:] != ans[:-1]) + 1).tolist()
            if len(at) < max_pieces:
                cuts.update(at)
        elif (w := _window(d, var, n)) is not None:
            windows.append(w)
    for p, q in sorted(windows):
        if not any(p <= c <= q for c in cuts):
            cuts.add(p)
    return sorted(cuts)[:total - 1]


def partition(k: K.Kernel, max_pieces: int = 8, max_extent: int = 1 << 16,
              parallel_pieces: int = 64) -> K.Kernel:
    """Split every loop at the positions where a bounds check or a clamp over its variable
    alone changes its answer, so each piece's checks fold to constants; at most `max_pieces`
    pieces per loop, `parallel_pieces` for the parallel loop, whose pieces stay parallel
    loops that tile its range in order (`K.Loop`): an LSTM's gradient concatenates its 32
    steps' gate gradients along it, and every element chose among 32 clamped loads (W3's
    1024 x 512 concat: 366 us on one thread)."""
    def walk(body, ext):
        out = []
        for s in body:
            if not isinstance(s, K.Loop):
                out.append(s)
                continue
            inner = {**ext, s.var: s.extent}
            cuts = ([] if s.extent > max_extent else
                    _cuts(s.body, s.var, s.extent, max_pieces,
                          parallel_pieces if s.parallel else max_pieces))
            if not cuts:
                out.append(replace(s, body=walk(s.body, inner)))
                continue
            for a, b in zip([0] + cuts, cuts + [s.extent]):
                env = {s.var: K.add(K.Var(s.var), K.Const(a))}
                piece = _stmts(s.body, env, {**ext, s.var: b - a})
                out.append(replace(s, extent=b - a, body=walk(piece, {**ext, s.var: b - a})))
        return tuple(out)
    return _kernel(k, walk(k.body, {}))
