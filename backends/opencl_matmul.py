"""Tiled matmul kernels for the OpenCL backend (`graphc.backends.opencl`).

The backend lowers a matmul kernel to one accumulator per output element
(`graphc.lower.lower_kernel(..., row_order=False)`): a perfect nest over the output
(batch..., i, j), inside it `acc = 0; for k: acc += A * B`, then the epilogue (bias,
activation, the SGD update: Lets and the Store, reading acc). `match` takes that kernel IR
apart; `render_tiled` renders it as a blocked kernel in which every work-item computes a
block of WM rows x WN columns (NV vectors of VW columns, so B's row segments load as one
vector and each A element is broadcast over them):

  registers  (CPUs) A and B are read where they are, k runs in the work-item. A block at the
             bottom / right edge is moved back inside the matrix, so every load is in range
             and unguarded; it stores only the elements the block before it does not.
  local      (GPUs) a work-group of LX x LY work-items computes a BM x BN block; A and B tiles
             of BK steps of k are staged in __local memory (zero outside the matrix, barriers
             around the reads), each work-item's VW-column vectors strided by LX*VW so that
             neighbouring work-items touch neighbouring addresses.

Everything is rendered from the kernel IR: the operand loads are the IR's index expressions
with the loop variables substituted (transposed and strided views included), and the
epilogue is the IR's own statements in a helper function called once per output row of a
block. Float kernels only (integer matmuls keep the per-element kernel). The sum runs over k
in order, as in the per-element kernel.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, replace

from graphc import kernel as K
from graphc.backends import opencl_ir as IR
from graphc.backends.opencl_render import _unflatten
from graphc.types import DType


@dataclass(frozen=True)
class Matmul:
    """A per-element matmul kernel's IR in parts."""
    batch: tuple        # the output loops over batch axes, outermost first
    rows: K.Loop        # the output loop over i
    cols: K.Loop        # the output loop over j
    red: K.Loop         # the sequential loop over k
    acc: K.DefAcc
    a: object           # A's value at (batch, i, k), Lets inlined
    b: object           # B's value at (batch, k, j)
    epilogue: tuple     # the Lets and the Store for one output element (they read acc)

    @property
    def dtype(self) -> DType:
        return self.acc.dtype


@dataclass(frozen=True)
class Tiles:
    """The blocking of one matmul kernel (see the module docstring)."""
    local: bool     # A and B tiles staged in __local memory
    wm: int         # rows per work-item
    vw: int         # columns per vector
    nv: int = 1     # vectors per row
    lx: int = 1     # work-items per work-group along columns (local)
    ly: int = 1     # ... along rows (local)
    bk: int = 1     # steps of k per tile (local)

    @property
    def wn(self) -> int:
        return self.vw * self.nv

    @property
    def bm(self) -> int:
        return self.ly * self.wm

    @property
    def bn(self) -> int:
        return self.lx * self.wn

    def local_bytes(self, dtype: DType) -> int:
        return (self.bm + self.bn) * self.bk * dtype.np.itemsize


# ---- matching the per-element kernel -------------------------------------------------------------
def match(k: K.Kernel) -> Matmul | None:
    """The parts of a per-element float matmul kernel, or None for any other kernel."""
    if k.kind != "matmul" or len(k.body) != 1:
        return None
    loops, body = [k.body[0]], list(k.body[0].body)
    if not isinstance(loops[0], K.Loop) or not loops[0].parallel:
        return None
    while len(body) == 1 and isinstance(body[0], K.Loop):
        loops.append(body[0])
        body = list(body[0].body)
    accs = [s for s in body if isinstance(s, K.DefAcc)]
    reds = [s for s in body if isinstance(s, K.Loop)]
    if len(loops) < 2 or len(accs) != 1 or len(reds) != 1 or any(lp.extent == 0 for lp in loops):
        return None
    acc, red = accs[0], reds[0]
    if not acc.dtype.is_float or acc.init != 0 or body.index(acc) > body.index(red):
        return None
    epilogue = [s for s in body if s is not acc and s is not red]
    if not all(isinstance(s, K.Let) for s in epilogue[:-1]) or \
            not isinstance(epilogue[-1], K.Store):
        return None
    lets: dict[str, object] = {}
    product = None
    for s in red.body:
        if isinstance(s, K.Let) and product is None:
            lets[s.name] = IR.subst(s.value, {}, lets)
        elif isinstance(s, K.Accumulate) and product is None and s.name == acc.name and \
                s.op == "sum" and isinstance(s.value, K.Binary) and s.value.op == "mul":
            product = s.value
        else:
            return None
    if product is None:
        return None
    x, y = IR.subst(product.a, {}, lets), IR.subst(product.b, {}, lets)
    i, j, kv = loops[-2].var, loops[-1].var, red.var
    batch = {lp.var for lp in loops[:-2]}
    vx, vy = IR.value_vars(x), IR.value_vars(y)
    if vx is None or vy is None:   # an accumulator, a Let of the element, or the output
        return None
    if vx <= batch | {i, kv} and vy <= batch | {kv, j}:
        a, b = x, y
    elif vy <= batch | {i, kv} and vx <= batch | {kv, j}:
        a, b = y, x   # the product commutes
    else:
        return None
    if a.dtype is not acc.dtype or b.dtype is not acc.dtype or IR.reads_output(epilogue):
        return None
    return Matmul(tuple(loops[:-2]), loops[-2], loops[-1], red, acc, a, b, tuple(epilogue))


# ---- choosing the tiles --------------------------------------------------------------------------
def _pow2_at_most(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _pow2_at_least(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def plan_tiles(m: Matmul, limits, local: bool) -> Tiles | None:
    """The blocking for `m` on a device with `limits` (see `opencl_render.Limits`); None when
    no local-memory tiling fits (the caller falls back to the register blocking)."""
    M, N = m.rows.extent, m.cols.extent
    item = m.dtype.np.itemsize
    if not local:
        # 6 rows x two SIMD-wide vectors: 12 of AVX2's 16 registers accumulate and B's row
        # segment is one 64-byte cache line. Measured on PoCL (2-core EPYC, float32 square
        # matmul 256 / 512 / 1024, GFLOP/s): 6x16 32 / 39 / 30, 8x16 26 / 35 / 29, 4x16
        # 24 / 33 / 28, 8x8 25 / 35 / 26, 4x8 23 / 27 / 18; the W1 step too (19 ms vs 20-25)
        vw = min(_pow2_at_most(limits.vector_bytes // item), _pow2_at_most(N), 16)
        return Tiles(False, wm=min(6, M), vw=vw, nv=2 if N >= 2 * vw else 1)
    # the common GPU blocking: 16x16 work-items of 4x4 outputs, k in tiles of 16 (8 KB of
    # __local memory in float32). Not measured on a GPU here: PoCL only checks that it is right.
    vw = min(4, _pow2_at_most(N))
    t = Tiles(True, wm=min(4, M), vw=vw, nv=1, lx=16, ly=16, bk=16)
    # no wider, taller or deeper than the matrix needs, then within the device's limits
    t = replace(t, lx=min(t.lx, _pow2_at_least(-(-N // t.wn))),
                ly=min(t.ly, _pow2_at_least(-(-M // t.wm))),
                bk=min(t.bk, _pow2_at_least(m.red.extent)))
    while t.lx * t.ly > limits.max_work_group_size:
        t = replace(t, ly=t.ly // 2) if t.ly >= t.lx else replace(t, lx=t.lx // 2)
    while t.local_bytes(m.dtype) > limits.local_mem_size and t.bk > 1:
        t = replace(t, bk=t.bk // 2)
    while t.local_bytes(m.dtype) > limits.local_mem_size and t.lx * t.ly > 1:
        t = replace(t, ly=t.ly // 2) if t.ly >= t.lx else replace(t, lx=t.lx // 2)
    if t.local_bytes(m.dtype) > limits.local_mem_size or t.lx * t.ly > limits.max_work_group_size:
        return None
    return t


def launch(m: Matmul, t: Tiles) -> tuple[tuple, tuple | None]:
    """(global size, local size) of the tiled kernel: dimension 0 over column blocks, 1 over
    row blocks, 2 over the batch (flattened)."""
    M, N = m.rows.extent, m.cols.extent
    nb = math.prod(lp.extent for lp in m.batch)
    if t.local:
        g = (-(-N // t.bn) * t.lx, -(-M // t.bm) * t.ly) + ((nb,) if m.batch else ())
        return g, (t.lx, t.ly) + ((1,) if m.batch else ())
    g = (-(-N // t.wn), -(-M // t.wm)) + ((nb,) if m.batch else ())
    return g, None


# ---- rendering -----------------------------------------------------------------------------------
def render_tiled(r, k: K.Kernel, m: Matmul, t: Tiles, head: list[str], params: list[str]) -> str:
    """OpenCL C for `k` blocked as `t`: the epilogue helper, then the kernel. `r` is the
    OpenCLRenderer (its expression rendering and dialect); `head` the kernel's comment and
    constants, `params` its parameter declarations."""
    it, T = r.index_type, r.types[m.dtype]
    VT = T if t.vw == 1 else f"{T}{t.vw}"
    M, N = m.rows.extent, m.cols.extent
    i, j = m.rows.var, m.cols.var
    bvars = [lp.var for lp in m.batch]
    r.uses.add(m.dtype)
    zero = r.lit(0, m.dtype)
    lines = list(head)

    # the epilogue, once: a helper storing one row segment of a block
    args = [b.name for b in k.args]
    row = f"{k.name}_row"
    lines.append(f"/* {k.name}'s epilogue: output elements ({', '.join(bvars + [i, j])}) for "
                 f"{j} = gc_j .. gc_j+{t.vw - 1} within [gc_from, gc_to), each from its sum "
                 f"{m.acc.name} */")
    sig = params + [f"{it} {v}" for v in bvars + [i]] + \
        [f"{it} gc_j", f"{it} gc_from", f"{it} gc_to", f"{VT} gc_acc"]
    lines.append(f"inline void {row}({', '.join(sig)}) {{")
    if t.vw > 1:
        lines.append(f"  {T} gc_v[{t.vw}];")
        lines.append(f"  vstore{t.vw}(gc_acc, 0, gc_v);")
    lines.append(f"  for (int gc_c = 0; gc_c < {t.vw}; gc_c++) {{")
    lines.append(f"    {it} {j} = gc_j + gc_c;")
    lines.append(f"    if ({j} < gc_from || {j} >= gc_to) continue;")
    lines.append(f"    {T} {m.acc.name} = {'gc_v[gc_c]' if t.vw > 1 else 'gc_acc'};")
    lines += r.stmts(m.epilogue, "    ")
    lines.append("  }")
    lines.append("}")

    attr = f"__attribute__((reqd_work_group_size({t.lx}, {t.ly}, 1))) " if t.local else ""
    lines.append(f"{r.kernel_prefix} {attr}{k.name}({', '.join(params)}) {{")
    acc = [[f"gc_acc{a}_{v}" for v in range(t.nv)] for a in range(t.wm)]
    if t.local:
        lines += _local_body(r, m, t, VT, zero, acc)
    else:
        lines += _register_body(r, m, t, VT, zero, acc)
    # one helper call per row and vector of the block
    if t.local:
        for a in range(t.wm):
            ri = f"gc_ib + gc_ly*{t.wm}{f' + {a}' if a else ''}" if t.wm > 1 else "gc_ib + gc_ly"
            guard = f"if ({ri} < {M}) " if M % t.bm else ""
            for v in range(t.nv):
                cj = f"gc_jb + ({v * t.lx} + gc_lx)*{t.vw}" if v else f"gc_jb + gc_lx*{t.vw}"
                lines.append(f"  {guard}{row}({', '.join(args + bvars)}, {ri}, {cj}, 0, {N}, "
                             f"{acc[a][v]});")
    else:
        for a in range(t.wm):
            ri = f"gc_i + {a}" if a else "gc_i"
            guard = f"if ({ri} >= gc_bi) " if M % t.wm else ""
            for v in range(t.nv):
                cj = f"gc_j + {v * t.vw}" if v else "gc_j"
                lines.append(f"  {guard}{row}({', '.join(args + bvars)}, {ri}, {cj}, gc_bj, {N}, "
                             f"{acc[a][v]});")
    lines.append("}")
    return "\n".join(lines)


def _comment(text: str) -> list[str]:
    """`text` as a C comment in lines of at most 100 characters."""
    lines = [f"     {x}" for x in textwrap.wrap(text, 92)]
    lines[0] = "  /* " + lines[0][5:]
    lines[-1] += " */"
    return lines


def _batch(r, m: Matmul, fn: str) -> list[str]:
    if not m.batch:
        return []
    return [f"  {r.index_type} gc_z = {fn}(2);"] + _unflatten("gc_z", list(m.batch),
                                                              r.index_type, "  ")


def _vector(VT: str, parts: list[str]) -> str:
    """A vector from its lanes: PoCL calls vloadN out of line, while consecutive lane loads
    become one vector load (and a strided operand simply gathers)."""
    return parts[0] if len(parts) == 1 else f"({VT})({', '.join(parts)})"


def _fma_lines(t: Tiles, acc, a_of, ind: str, T: str, VT: str, bparts) -> list[str]:
    """One step of k: load the B vectors, then per row the A element and its multiply-adds.
    (a*b + c, not fma(): PoCL calls its fma() out of line; LLVM contracts a*b + c itself.)"""
    out = []
    for v in range(t.nv):
        out.append(f"{ind}{VT} gc_b{v} = {_vector(VT, bparts(v))};")
    for a in range(t.wm):
        out.append(f"{ind}{T} gc_a{a} = {a_of(a)};")
        out += [f"{ind}{acc[a][v]} += gc_a{a} * gc_b{v};" for v in range(t.nv)]
    return out


def _register_body(r, m: Matmul, t: Tiles, VT, zero, acc) -> list[str]:
    it, T = r.index_type, r.types[m.dtype]
    M, N, KK = m.rows.extent, m.cols.extent, m.red.extent
    i, j, kv = m.rows.var, m.cols.var, m.red.var
    lines = _comment(f"a register-blocked matmul: each work-item computes {t.wm} rows ({i}) x "
                     f"{t.wn} columns ({j}) of out, the sum over {kv} in order; a block at the "
                     f"bottom or right edge moves back inside and stores only what the block "
                     f"before it does not")
    lines += [f"  {it} gc_bi = get_global_id(1)*{t.wm}, gc_bj = get_global_id(0)*{t.wn};",
             f"  {it} gc_i = {f'min(gc_bi, {M - t.wm}L)' if M % t.wm else 'gc_bi'};",
             f"  {it} gc_j = {f'min(gc_bj, {N - t.wn}L)' if N % t.wn else 'gc_bj'};"]
    lines += _batch(r, m, "get_global_id")
    lines += [f"  {VT} {name} = {zero};" for row in acc for name in row]
    lines.append(f"  for ({it} {kv} = 0; {kv} < {KK}; {kv}++) {{")

    def a_of(a):
        return r.value(IR.subst(m.a, {i: K.add(K.Var("gc_i"), K.Const(a))}))

    def bparts(v):
        return [r.value(IR.subst(m.b, {j: K.add(K.Var("gc_j"), K.Const(v * t.vw + c))}))
                for c in range(t.vw)]
    lines += _fma_lines(t, acc, a_of, "    ", T, VT, bparts)
    lines.append("  }")
    return lines


def _local_body(r, m: Matmul, t: Tiles, VT, zero, acc) -> list[str]:
    it, T = r.index_type, r.types[m.dtype]
    M, N, KK = m.rows.extent, m.cols.extent, m.red.extent
    i, j, kv = m.rows.var, m.cols.var, m.red.var
    ws = t.lx * t.ly
    lines = _comment(f"a tiled matmul: a work-group of {t.lx}x{t.ly} work-items computes "
                     f"{t.bm} rows ({i}) x {t.bn} columns ({j}) of out; tiles of A and B over "
                     f"{t.bk} steps of {kv} are staged in __local memory (zero outside the "
                     f"matrix); each work-item sums {t.wm} rows x {t.nv} vector(s) of {t.vw} "
                     f"columns" + (f", {t.lx * t.vw} columns apart" if t.nv > 1 else ""))
    lines += [f"  __local {T} gc_As[{t.bk}][{t.bm}];",
             f"  __local {T} gc_Bs[{t.bk}][{t.bn}];",
             f"  int gc_lx = get_local_id(0), gc_ly = get_local_id(1), "
             f"gc_lid = gc_ly*{t.lx} + gc_lx;",
             f"  {it} gc_ib = get_group_id(1)*{t.bm}, gc_jb = get_group_id(0)*{t.bn};"]
    lines += _batch(r, m, "get_group_id")
    lines += [f"  {VT} {name} = {zero};" for row in acc for name in row]
    lines.append(f"  for ({it} gc_kb = 0; gc_kb < {KK}; gc_kb += {t.bk}) {{")

    def copy(what, val, fast, slow, to, conds):
        """A cooperative copy of one tile: consecutive work-items take consecutive elements
        along `fast`, the operand's unit-stride axis where it has one (coalesced reads);
        fast / slow are (loop variable, extent, first value)."""
        (fv, fe, fb), (sv, se, sb) = fast, slow
        v = r.value(val)
        conds = [c for c in conds if c]
        if conds:
            v = f"{' && '.join(conds)} ? {v} : {zero}"
        return [f"    for (int gc_t = gc_lid; gc_t < {fe * se}; gc_t += {ws}) {{  /* {what} */",
                f"      {it} {fv} = {fb} + gc_t % {fe}, {sv} = {sb} + gc_t / {fe};",
                f"      {to} = {v};",
                "    }"]

    ax_i, ax_j, ax_k = (i, t.bm, "gc_ib"), (j, t.bn, "gc_jb"), (kv, t.bk, "gc_kb")
    ci, cj, ck = (f"{i} < {M}" if M % t.bm else "", f"{j} < {N}" if N % t.bn else "",
                  f"{kv} < {KK}" if KK % t.bk else "")
    lines += copy(f"the A tile, A[{i}, {kv}]", m.a,
                  *((ax_i, ax_k) if IR.unit_stride(m.a, i) else (ax_k, ax_i)),
                  f"gc_As[{kv} - gc_kb][{i} - gc_ib]", [ci, ck])
    lines += copy(f"the B tile, B[{kv}, {j}]", m.b,
                  *((ax_k, ax_j) if IR.unit_stride(m.b, kv) else (ax_j, ax_k)),
                  f"gc_Bs[{kv} - gc_kb][{j} - gc_jb]", [ck, cj])
    lines.append("    barrier(CLK_LOCAL_MEM_FENCE);")
    lines.append(f"    for (int gc_kk = 0; gc_kk < {t.bk}; gc_kk++) {{")

    def a_of(a):
        return f"gc_As[gc_kk][gc_ly*{t.wm}{f' + {a}' if a else ''}]" if t.wm > 1 else \
            "gc_As[gc_kk][gc_ly]"

    def bparts(v):
        col = f"({v * t.lx} + gc_lx)*{t.vw}" if v else f"gc_lx*{t.vw}"
        return [f"gc_Bs[gc_kk][{col} + {c}]" if c else f"gc_Bs[gc_kk][{col}]"
                for c in range(t.vw)]
    lines += _fma_lines(t, acc, a_of, "      ", T, VT, bparts)
    lines.append("    }")
    lines.append("    barrier(CLK_LOCAL_MEM_FENCE);")
    lines.append("  }")
    return lines
