"""How closely a backend must agree with the reference interpreter: written down once, per
dtype and op class, each with the reason it is not zero.

The reference interpreter evaluates every op with NumPy, one op at a time, each result rounded
to its dtype. A compiled backend may legitimately differ, and only in these ways:

* **FMA contraction.** A C/LLVM/OpenCL compiler may contract `a * b + c` into one fused
  multiply-add (one rounding instead of two): up to 1 ulp of `a * b` per contraction, more
  relative to the result when `a * b` and `c` cancel. OpenCL also allows 2.5 ulp float32
  division and 3 ulp float32 sqrt unless `-cl-fp32-correctly-rounded-divide-sqrt` is given.
* **Vectorised / different math libraries.** `exp`, `log`, `sin`, `cos`, `tanh`, `pow` are
  not correctly rounded anywhere: glibc, SVML, SLEEF and OpenCL's built-ins differ by a few
  ulp (the OpenCL spec allows 3-4 ulp for exp/log/sin/cos, 5 for tanh, 16 for pow).
* **Summation order.** Reductions and matmul accumulate in whatever order the backend's
  loops, vector lanes or work-groups choose (NumPy itself sums pairwise); the error bound
  grows with the number of terms (n * eps * sum|x| in the worst case, ~sqrt(n) * eps typically).
* **Composition.** A whole model (and its gradient, which passes through the forward ops
  again) compounds the above across many ops.

Every backend is compiled with fast-math **off**: no reassociation beyond reductions, no
flush-to-zero, no "approximate reciprocal", IEEE inf/nan. Those would need looser numbers
than these and are a bug here. Integer and boolean results, movement ops, comparisons,
max/min, `where`, casts and the counter-based `rand` are exact on every backend: tolerance 0.

A value passes when, elementwise, `|got - want| <= atol + rtol * |want|` (NumPy's
`allclose`), with NaN equal to NaN, and infinities equal only to the same infinity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.ops import Op
from graphc.types import DType


@dataclass(frozen=True)
class Tol:
    """One tolerance: `|got - want| <= atol + rtol * |want|`, and why it is what it is."""
    rtol: float
    atol: float
    reason: str
    op_class: str = ""
    dtype: str = ""

    def __str__(self) -> str:
        if self.rtol == 0 and self.atol == 0:
            return f"{self.op_class} exact" if self.op_class else "exact"
        return f"{self.op_class} {self.rtol:.0e}/{self.atol:.0e}".strip()


# ---- op classes ------------------------------------------------------------------------------
# From tightest to loosest: a kernel or a value computed by several ops gets the loosest class
# among them (see `cone_class`).
OP_CLASSES = ("exact", "arith", "transcendental", "reduce", "matmul", "composite")

_CLASS_OF: dict[Op, str] = {
    # exact on every backend: no rounding, or one correctly rounded result on identical inputs
    **{op: "exact" for op in (Op.NEG, Op.ABS, Op.SIGN, Op.CAST, Op.MAXIMUM, Op.MINIMUM,
                              Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.WHERE, Op.MAX,
                              Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SLICE, Op.PAD, Op.CONCAT,
                              Op.RAND, Op.INPUT, Op.CONST)},
    # IEEE-rounded arithmetic, perturbed by FMA contraction and OpenCL's div/sqrt allowance
    **{op: "arith" for op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.RECIP, Op.SQRT)},
    # library functions: a few ulp, different in every libm
    **{op: "transcendental" for op in (Op.EXP, Op.LOG, Op.SIN, Op.COS, Op.TANH, Op.POW)},
    Op.SUM: "reduce",
    Op.MATMUL: "matmul",
}
if hasattr(Op, "STOP_GRADIENT"):  # the identity (its derivative is zero)
    _CLASS_OF[Op.STOP_GRADIENT] = "exact"
# GRAD is expanded before any backend sees it; FUSED is classified by its body.
UNCLASSIFIED = frozenset({Op.GRAD, Op.FUSED})

_F32 = np.finfo(np.float32).eps   # 1.19e-07
_F64 = np.finfo(np.float64).eps   # 2.22e-16

_EXACT = "no rounding happens (or the same correctly rounded result from the same inputs): " \
         "every backend must produce identical bits"
_INT = "integer and boolean arithmetic is exact (two's complement wrap-around is the same " \
       "everywhere; integer division truncates toward zero on every backend)"

# (dtype, op class) -> (rtol, atol, reason). Floats get a few ulp times a safety factor.
_TABLE: dict[tuple[str, str], tuple[float, float, str]] = {
    ("float32", "exact"): (0.0, 0.0, _EXACT),
    ("float64", "exact"): (0.0, 0.0, _EXACT),
    ("float32", "arith"): (1e-6, 1e-6,
                           "FMA contraction of a*b+c (1 ulp of the product, absolute under "
                           "cancellation) and OpenCL's 2.5 ulp division / 3 ulp sqrt in float32: "
                           f"~8 ulp (eps {_F32:.1e}) relative, 1e-6 absolute near zero"),
    ("float64", "arith"): (1e-14, 1e-14,
                           "FMA contraction of a*b+c (1 ulp of the product, absolute under "
                           f"cancellation): ~45 ulp (eps {_F64:.1e}) relative, 1e-14 absolute"),
    ("float32", "transcendental"): (4e-6, 1e-6,
                                    "vectorised / vendor exp, log, sin, cos, tanh, pow: 3-5 ulp "
                                    "(OpenCL), 16 ulp for pow; 4e-6 covers 16 ulp with margin, "
                                    "1e-6 absolute where the result is near zero (sin at k*pi)"),
    ("float64", "transcendental"): (1e-13, 1e-15,
                                    "vectorised libm (SVML, SLEEF) vs glibc: a few ulp, 16 for "
                                    "pow; 1e-13 is ~450 ulp of margin"),
    ("float32", "reduce"): (1e-5, 1e-5,
                            "summation order (sequential loop, vector lanes, work-group tree "
                            "vs NumPy's pairwise sum): error grows with the number of terms; "
                            "absolute part because cancelling sums lose relative accuracy"),
    ("float64", "reduce"): (1e-12, 1e-12,
                            "summation order, as for float32, scaled to float64's eps"),
    ("float32", "matmul"): (1e-5, 1e-5,
                            "accumulation order of the dot products (blocking, vector lanes) "
                            "and FMA in the inner loop"),
    ("float64", "matmul"): (1e-12, 1e-12,
                            "accumulation order and FMA, as for float32, scaled to float64"),
    ("float32", "composite"): (1e-4, 1e-5,
                               "a whole model or gradient: the per-op differences above "
                               "compound through tens of ops and the backward pass (~800 ulp "
                               "relative); 1e-5 absolute for values (gradients) near zero"),
    ("float64", "composite"): (1e-9, 1e-11,
                               "a whole model or gradient in float64: the per-op differences "
                               "compound as for float32"),
}
for _dt in ("int32", "int64", "bool"):
    for _c in OP_CLASSES:
        _TABLE[(_dt, _c)] = (0.0, 0.0, _INT)

TOLERANCES: dict[tuple[str, str], Tol] = {
    k: Tol(r, a, why, k[1], k[0]) for k, (r, a, why) in _TABLE.items()}
assert set(TOLERANCES) == {(d.name, c) for d in DType for c in OP_CLASSES}


def op_class(op: Op) -> str:
    """The tolerance class of a primitive op ('exact', 'arith', 'transcendental', ...)."""
    try:
        return _CLASS_OF[op]
    except KeyError:
        raise ValueError(f"op {op.value} has no tolerance class (it never reaches a "
                         f"backend on its own)") from None


def looser(a: str, b: str) -> str:
    return a if OP_CLASSES.index(a) >= OP_CLASSES.index(b) else b


def _dtype_name(dtype) -> str:
    if isinstance(dtype, DType):
        return dtype.name
    dt = np.dtype(dtype)
    return "bool" if dt == np.bool_ else dt.name


def tolerance(dtype, op_class_name: str = "composite") -> Tol:
    """The tolerance for a value of `dtype` (a DType, numpy dtype or name) computed by an op of
    class `op_class_name`."""
    key = (_dtype_name(dtype), op_class_name)
    if key not in TOLERANCES:
        raise KeyError(f"no tolerance for dtype {key[0]} and op class {key[1]!r} "
                       f"(classes: {', '.join(OP_CLASSES)})")
    return TOLERANCES[key]


def ops_in(nodes) -> list[Op]:
    """The primitive ops of some nodes, fused kernels' bodies flattened."""
    out = []
    for n in nodes:
        if n.op is Op.FUSED:
            out.extend(ops_in(n.attrs["body"].nodes))
        elif n.op is not Op.GRAD:
            out.append(n.op)
    return out


def cone_class(ops) -> str:
    """The class of a value computed by the ops `ops` (everything it depends on): 'exact' when
    none rounds, the class of the one rounding op when there is exactly one, else 'composite'."""
    inexact = [op_class(op) for op in ops if op_class(op) != "exact"]
    if not inexact:
        return "exact"
    if len(inexact) == 1:
        return inexact[0]
    return "composite"


# ---- comparing arrays ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Diff:
    """How far `got` is from `want`: the largest absolute error, the largest relative error
    (|got - want| / max(|want|, atol), so values near zero do not blow it up), how many
    elements are outside the tolerance, and whether shapes, dtypes and NaN/inf agree."""
    max_abs: float
    max_rel: float
    bad: int
    size: int
    ok: bool
    note: str = ""


def diff(got, want, tol: Tol) -> Diff:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return Diff(float("inf"), float("inf"), want.size, want.size, False,
                    f"shape {got.shape} != {want.shape}")
    if got.dtype != want.dtype:
        return Diff(float("inf"), float("inf"), want.size, want.size, False,
                    f"dtype {got.dtype} != {want.dtype}")
    if want.size == 0:
        return Diff(0.0, 0.0, 0, 0, True)
    if want.dtype.kind not in "fc":
        bad = got != want
        nbad = int(np.count_nonzero(bad))
        if want.dtype == np.bool_:
            err = bad.astype(np.float64)
        else:
            err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        m = float(err.max())
        return Diff(m, m / max(float(np.abs(want.astype(np.float64)).max()), 1.0), nbad,
                    want.size, nbad == 0)
    g, w = got.astype(np.float64), want.astype(np.float64)
    gn, wn = np.isnan(g), np.isnan(w)
    same_special = (gn & wn) | ((g == w) & np.isinf(w))
    finite = np.isfinite(g) & np.isfinite(w)
    with np.errstate(all="ignore"):
        err = np.where(finite, np.abs(g - w), np.where(same_special, 0.0, np.inf))
        limit = np.where(finite, tol.atol + tol.rtol * np.abs(w), 0.0)
        rel = np.where(err == 0, 0.0,
                       err / np.maximum(np.abs(np.where(finite, w, 1.0)),
                                        max(tol.atol, np.finfo(want.dtype).tiny)))
    badmask = ~(err <= limit)
    nbad = int(np.count_nonzero(badmask))
    note = ""
    if np.any(gn != wn):
        note = f"{int(np.count_nonzero(gn & ~wn))} NaN where the reference has none" \
            if np.any(gn & ~wn) else f"{int(np.count_nonzero(wn & ~gn))} NaN missing"
    return Diff(float(err.max()), float(np.nan_to_num(rel, nan=np.inf).max()), nbad, want.size,
                nbad == 0, note)


def table() -> str:
    """The tolerance table as text (what `graphc compare --tolerances` prints)."""
    lines = [f"{'dtype':<8} {'op class':<15} {'rtol':>7} {'atol':>7}  reason"]
    for (dt, c), t in TOLERANCES.items():
        if dt in ("int32", "int64", "bool") and c != "exact":
            continue
        lines.append(f"{dt:<8} {c:<15} {t.rtol:>7.0e} {t.atol:>7.0e}  {t.reason}")
    lines.append("int32/int64/bool: every class exact (" + _INT + ")")
    return "\n".join(lines)
