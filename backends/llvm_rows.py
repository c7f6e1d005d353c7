"""What a parallel loop over rows does across its rows, in the LLVM codegen (both leave the
kernel IR and its results as they are: the printed kernel is the unpipelined one; the LLVM
IR shows the prefetch loop and the "<var>.fused" loop).

A parallel loop whose iteration makes several passes over one row of an input (a row
softmax: the max, then exp and sum, then the division, the last two in L1) reads the row
from memory only in its first pass, which is short; the passes after it leave memory idle,
and the hardware prefetcher, which follows the loads, does not run a row ahead of them.
Such a loop prefetches, at the top of each iteration, the row PREFETCH_AHEAD iterations on
(`prefetch_rows`: a cache line at a time, into L2), so that reading it overlaps the math
of the rows before it. W4's 4096x1024 softmax on 2 threads, old and new compiled into one
process and timed interleaved: 1.632 -> 1.491 ms (2 rows ahead; 1 row 1.525, 4 rows
1.490, into L1 instead of L2 1.499). One-pass loops are left to the hardware prefetcher.

The same softmax then spends its time on the FMA units in the exp pass and on the divider
in the division pass, each idle while the other pass runs. `pipelined` fuses the two
across rows (software pipelining): iteration i computes exp of row i and divides row
i - 1 in one loop, so the divisions overlap the polynomials. Bit for bit the same results
(the same operations on the same values); in one process, interleaved: 4096x1024 on 2
threads 1.525 -> 1.448 ms, 64x1024 on one thread (in cache) 63 -> 60 us.
"""
from __future__ import annotations

from graphc import kernel as K
from graphc.backends.llvm_loops import interleaved

PREFETCH_AHEAD = 2                        # rows ahead that a multi-pass parallel loop prefetches
PREFETCH_BYTES = (256, 1 << 16)           # the row sizes it does that for
PREFETCH_BUFFER = 1 << 20                 # and the input sizes (smaller ones stay in cache:
# W3's LSTM step has 161 such loops over 32x128 gates, 5.75 ms prefetching against 5.70 not)
LINE = 64                                 # bytes a prefetch brings (a cache line)


def _stmts(body):
    """Every statement in `body`, loops walked."""
    for s in body:
        yield s
        if isinstance(s, K.Loop):
            yield from _stmts(s.body)


def _rows(loop: K.Loop) -> dict:
    """{buffer: (first element at iteration 0, elements, stride) or None} for every buffer
    `loop`'s body loads or stores: the row an iteration touches (first to last element),
    None where the indices are not affine in the loop variable with one positive stride."""
    ext = {loop.var: 1, **{s.var: s.extent for s in _stmts(loop.body) if isinstance(s, K.Loop)}}
    idx: dict = {}
    for s in _stmts(loop.body):
        if isinstance(s, K.Store):
            idx.setdefault(s.buffer, []).append(s.index)
    for v in K.values(loop.body):
        if isinstance(v, K.Load):
            idx.setdefault(v.buffer, []).append(v.index)
    rows = {}
    for buf, es in idx.items():
        strides = {K.stride(e, loop.var) for e in es}
        stride = strides.pop() if len(strides) == 1 else None
        lo = min(K.bounds(e, ext)[0] for e in es)
        n = max(K.bounds(e, ext)[1] for e in es) - lo + 1
        rows[buf] = (lo, n, stride) if stride is not None and stride > 0 else None
    return rows


def prefetch_rows(loop: K.Loop) -> list[tuple[K.Buffer, int, int, int]]:
    """For a parallel loop whose body has two or more loops (passes), the input rows to
    prefetch: (buffer, first element at iteration 0, elements, stride in the loop variable)
    for each input whose loads are affine in the loop variable (`_rows`) and whose row is
    PREFETCH_BYTES long and no longer than the stride (rows of their own: a column walk
    would prefetch a block per column), in a buffer of PREFETCH_BUFFER bytes or more."""
    passes = [s for s in loop.body if isinstance(s, K.Loop)]
    if not loop.parallel or len(passes) < 2:
        return []
    out = []
    for buf, row in sorted(_rows(loop).items(), key=lambda kv: kv[0].name):
        if buf.role != "in" or row is None or buf.size * buf.dtype.itemsize < PREFETCH_BUFFER:
            continue
        lo, n, stride = row
        if n <= stride and PREFETCH_BYTES[0] <= n * buf.dtype.itemsize <= PREFETCH_BYTES[1]:
            out.append((buf, lo, n, stride))
    return out


def _row_local(loop: K.Loop) -> bool:
    """Does each iteration of `loop` read and write only its own row of every buffer (each
    buffer's indices affine in the loop variable with one stride, the rows no longer than
    it: `_rows`), so that iterations may overlap?"""
    return all(row is not None and row[1] <= row[2] for row in _rows(loop).values())


def pipelined(loop: K.Loop) -> bool:
    """Does the last pass of this parallel loop's iteration run, for the row before, inside
    the pass before it (software pipelining across rows: `emit_pipelined`)? When the
    last pass divides and the pass before it computes exp or tanh over the same extent:
    the division runs on the divider, idle while the polynomial's fmas run, which a pass of
    its own left idle. It needs the two passes innermost, the last one reading no lets and
    only accumulators defined at the iteration's top level, and each iteration keeping to
    its own rows (`_row_local`)."""
    body = loop.body
    if not loop.parallel or len(body) < 2:
        return False
    a, z = body[-2], body[-1]
    if not (isinstance(a, K.Loop) and isinstance(z, K.Loop) and a.extent == z.extent):
        return False
    if not interleaved(a) or any(isinstance(s, K.Loop) for s in z.body):
        return False
    if not any(isinstance(v, K.Binary) and v.op == "div" and v.dtype.is_float
               for v in K.values(z.body)):
        return False
    if any(isinstance(v, K.Ref) for v in K.values(z.body)):
        return False
    accs = {v.name for v in K.values(z.body) if isinstance(v, K.AccRef)}
    if not accs <= {s.name for s in body if isinstance(s, K.DefAcc)}:
        return False
    return _row_local(loop)


# ---- emitting them (cg: the kernel's backends/llvm_codegen._Codegen) ----------------------
def emit_pipelined(cg, s: K.Loop, lo, hi):
    """Parallel loop `s` whose last pass Z runs for row i - 1 inside the pass A before
    it, in one loop (`pipelined`): on a thread's first row A alone, after its
    last row Z alone. Z reads row i - 1's accumulators from copies ("prev.<name>") made
    at the end of each iteration."""
    from graphc.backends.llvm_codegen import ir_type  # (it imports this module)
    b = cg.b
    *head, a, z = s.body
    accs = sorted({v.name: v.dtype for v in K.values(z.body) if isinstance(v, K.AccRef)}
                  .items())
    with b.goto_block(cg.entry):
        b.position_at_start(cg.entry)
        prev = {name: b.alloca(ir_type(dt), name=f"prev.{name}") for name, dt in accs}

    def z_body(row, j):
        """Z's body for `row`, at position j of the loop it is emitted in."""
        outer, vals = cg.vars[s.var], dict(cg.vals)
        cg.vars[s.var], cg.vars[z.var] = row, j
        cg.vals.update(prev)
        cg.stmts(z.body)
        cg.vars[s.var], cg.vals = outer, vals

    def body(i):
        for row in prefetch_rows(s):
            emit_prefetch(cg, i, s.extent, *row)
        cg.stmts(head)
        first, fused, join = (cg.fn.append_basic_block(f"{s.var}.{x}")
                              for x in ("first", "fused", "join"))
        b.cbranch(b.icmp_signed("==", i, lo), first, fused)
        b.position_at_end(first)
        cg.stmts([a])
        b.branch(join)
        b.position_at_end(fused)
        row = b.sub(i, cg.const(1, cg.i64))
        cg.loop(a, cg.const(0, cg.i64), cg.const(a.extent, cg.i64),
                lambda j: (cg.stmts(a.body), z_body(row, j)))
        b.branch(join)
        b.position_at_end(join)
        for name, _ in accs:  # this row's sums, for Z of it in the next iteration
            b.store(b.load(cg.vals[name]), prev[name])

    cg.loop(s, lo, hi, body)
    last, after = (cg.fn.append_basic_block(f"{s.var}.{x}") for x in ("last", "after"))
    b.cbranch(b.icmp_signed(">", hi, lo), last, after)
    b.position_at_end(last)
    row = b.sub(hi, cg.const(1, cg.i64))
    cg.loop(z, cg.const(0, cg.i64), cg.const(z.extent, cg.i64), lambda j: z_body(row, j))
    b.branch(after)
    b.position_at_end(after)


def emit_prefetch(cg, i, extent: int, buf: K.Buffer, lo: int, n: int, stride: int):
    """Prefetch (into L2) the row `buf` has PREFETCH_AHEAD iterations after i of its
    parallel loop (the last row once past the end): elements lo + j*stride .. + n,
    a cache line at a time (`prefetch_rows`)."""
    b, ir, i64, i32 = cg.b, cg.ir, cg.i64, cg.ir.IntType(32)
    ptr = cg.ptr[buf.name]
    name = "llvm.prefetch.p0"
    i8p = ir.IntType(8).as_pointer()
    pf = cg.module.globals.get(name) or ir.Function(
        cg.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), name)
    j = cg.clamp(b.add(i, cg.const(PREFETCH_AHEAD, i64)), extent - 1)
    first = b.add(b.mul(j, cg.const(stride, i64)), cg.const(lo, i64))
    step = max(1, LINE // buf.dtype.itemsize)
    pre = b.block
    cond = cg.fn.append_basic_block("prefetch.cond")
    body = cg.fn.append_basic_block("prefetch.body")
    done = cg.fn.append_basic_block("prefetch.end")
    b.branch(cond)
    b.position_at_end(cond)
    k = b.phi(i64, "pf")
    k.add_incoming(cg.const(0, i64), pre)
    b.cbranch(b.icmp_signed("<", k, cg.const(n, i64)), body, done)
    b.position_at_end(body)
    # read, locality 2 (L2: the row is read rows from now), data cache; a hint that
    # never faults, so the address need not be in bounds (no `inbounds`)
    b.call(pf, [b.bitcast(b.gep(ptr, [b.add(first, k)]), i8p), cg.const(0, i32),
                cg.const(2, i32), cg.const(1, i32)])
    k.add_incoming(b.add(k, cg.const(step, i64)), body)
    b.branch(cond)
    b.position_at_end(done)
