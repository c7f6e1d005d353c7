"""Vector types for elementwise kernels of the OpenCL backend (`graphc.backends.opencl`).

An elementwise kernel over float data whose innermost output extent is a multiple of the
vector width W runs W consecutive elements per work-item as one floatW value: loads that move
with the innermost index are built from W lanes (consecutive addresses, which the compiler
turns into one vector load; a strided operand gathers), loads that do not (a bias, a row's
max) stay scalars and widen, the ops are OpenCL's vector overloads (exp, tanh, ... and the
NaN-propagating max/min helpers, whose ?: is component-wise on vectors) and the result is
stored lane by lane.

Measured on PoCL (2-core EPYC, AVX2): the W4 8-op chain (tanh, exp, sqrt over 4M floats)
178 ms scalar -> 35 ms as float4 -> 20 ms as float8; the vector math builtins are SIMD,
their scalar versions are calls per element. vloadN/vstoreN and pointer casts measured the
same as the lane-wise form, which needs no alignment.

Only kernels whose every value has the output's float dtype and whose ops have vector
overloads qualify (no comparisons, selects, casts, pads or random numbers); the others keep
one element per work-item.
"""
from __future__ import annotations

import math

from graphc import kernel as K
from graphc.backends.opencl_ir import subst_index
from graphc.backends.opencl_render import _strip, _unflatten

UNARY = {"neg", "exp", "log", "sqrt", "sin", "cos", "tanh", "abs", "reciprocal"}
BINARY = {"add", "sub", "mul", "div", "pow", "maximum", "minimum"}
HELPERS = {"maximum": "gc_max", "minimum": "gc_min"}   # helpers that take vectors


def width(limits, dtype) -> int:
    """W: the device's SIMD width in elements (the wider of it and 4), at most 16."""
    return max(4, min(16, limits.vector_bytes // dtype.np.itemsize))


def plan(r, k: K.Kernel, vw: int):
    """(the output loops, the statements of one element) of a kernel that runs vw elements
    per work-item, or None."""
    if k.kind != "elementwise":
        return None
    loops, body = r.launch(k)
    if not loops or loops[-1].extent % vw or any(lp.extent == 0 for lp in loops):
        return None
    last = loops[-1].var
    out = [b for b in k.buffers if b.role == "out"][0]
    if not out.dtype.is_float or len(body) < 1 or not isinstance(body[-1], K.Store):
        return None
    if not all(isinstance(s, K.Let) for s in body[:-1]) or K.stride(body[-1].index, last) != 1:
        return None
    if not all(_ok(s.value, out.dtype) for s in body):
        return None
    return loops, body


def _ok(v, dtype) -> bool:
    if v.dtype is not dtype:
        return False
    if isinstance(v, (K.Lit, K.Ref)):
        return True
    if isinstance(v, K.Load):
        return v.buffer.role != "out"
    if isinstance(v, K.Unary):
        return v.op in UNARY and _ok(v.x, dtype)
    if isinstance(v, K.Binary):
        return v.op in BINARY and _ok(v.a, dtype) and _ok(v.b, dtype)
    return False


def render(r, k: K.Kernel, loops, body, vw: int, lines: list[str]) -> str:
    """The kernel's body for `plan`'s result: `lines` holds its comment, constants and
    signature."""
    it, dt = r.index_type, body[-1].buffer.dtype
    T, VT = r.types[dt], f"{r.types[dt]}{vw}"
    last = loops[-1].var
    n = math.prod(lp.extent for lp in loops) // vw
    r.uses.add(("vector", dt, vw))
    lines.append(f"  /* {vw} consecutive elements per work-item, as {VT} */")
    lines.append(f"  {it} gid = {r.global_id};")
    lines.append(f"  if (gid >= {n}) return;  /* the global size is rounded up */")
    # the innermost variable counts vectors, then elements
    lines += _unflatten("gid", loops[:-1] + [K.Loop(last, loops[-1].extent // vw, ())], it, "  ")
    lines.append(f"  {last} *= {vw};")
    vec: dict[str, bool] = {}   # Let name -> is a vector

    def value(v) -> tuple[str, bool]:
        if isinstance(v, K.Load):
            if last not in K.index_vars(v.index):   # the same element for every lane
                return r.value(v), False
            lanes = [r.value(K.Load(v.buffer, subst_index(v.index, {
                last: K.add(K.Var(last), K.Const(c))}))) for c in range(vw)]
            return f"({VT})({', '.join(lanes)})", True
        if isinstance(v, K.Ref):
            return v.name, vec[v.name]
        if isinstance(v, K.Lit):
            return r.value(v), False
        if isinstance(v, K.Unary):
            x, xv = value(v.x)
            fmt = r.unary[(v.op, "float")]
            return fmt.format(x=x, **r.tu(dt)), xv
        a, av = value(v.a)
        b, bv = value(v.b)
        if v.op in HELPERS or v.op == "pow":   # both arguments of one type
            if av != bv:
                a, b = (a if av else f"({VT}){a}", b if bv else f"({VT}){b}")
            t = VT if av or bv else T
            name = f"{HELPERS[v.op]}_{t}" if v.op in HELPERS else "pow"
            return f"{name}({a}, {b})", av or bv
        fmt = r.binary[(v.op, "float")]
        return fmt.format(a=a, b=b, **r.tu(dt)), av or bv

    for s in body[:-1]:
        x, xv = value(s.value)
        vec[s.name] = xv
        lines.append(f"  {VT if xv else T} {s.name} = {_strip(x)};")
    st = body[-1]
    x, xv = value(st.value)
    lines.append(f"  {VT if xv else T} gc_v = {_strip(x)};")
    lanes = [r.index(subst_index(st.index, {last: K.add(K.Var(last), K.Const(c))}))
             for c in range(vw)]
    lines.append("  " + " ".join(f"{st.buffer.name}[{e}] = {f'gc_v.s{c:x}' if xv else 'gc_v'};"
                                 for c, e in enumerate(lanes)))
    lines.append("}")
    return "\n".join(lines)

