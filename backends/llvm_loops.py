"""Loop metadata for chosen loops of an LLVM kernel: keeping an accumulated row in registers,
and interleaving the loops that compute exp or tanh (backends/llvm_rows.py: what a parallel
loop over rows does across its rows).

The backend compiles with LLVM's loop unrolling off (`LLVMBackend(unroll=False)`: W1-W3
compiled 2-5x faster and ran as fast). One loop shape needs it, though: row_matmul's inner
loop (graphc/lower.py), which adds a row of b times a[i, k] into the output row,

    for k ...:                                   (the k loops of the printed kernel)
      t = a[i, k]
      for j in 0..W:   out[j] = out[j] + t * b[k, j]

Vectorised but not unrolled, every k loads and stores the output row (store-to-load
forwarding on each of them); fully unrolled after vectorisation, the W/8 vectors of the row
are loop-invariant addresses that LICM promotes to registers for the whole k loop. With
unrolling off, the new pass manager still runs the unroll passes "only when forced", so
this row's loop gets loop metadata (LangRef, "Transformation Metadata")

    !L = !{!L, !{"llvm.loop.vectorize.enable", i1 1},
              !{"llvm.loop.vectorize.followup_all", !{"llvm.loop.unroll.full"}}}

which vectorises it and then fully unrolls the loops the vectoriser made of it (the vector
loop and its remainder); nothing else is unrolled. Measured on batch-1 inference (W5 b1,
784x512 one-row matmul in 64-column blocks, one thread, CPU time): 62 -> 35 us, as fast as
unrolling every loop of the module; plain `llvm.loop.unroll.full` on the scalar loop
instead unrolls it before vectorisation (64 scalar statements): 165 us.

llvmlite's IRBuilder has no distinct metadata nodes; a self-referential node (the loop ID
LLVM requires as first operand) is made by creating the node and then setting its operands,
as the IR text `!5 = !{ !5, ... }` that LLVM parses as a cycle (hence unique).

An innermost loop that computes exp or tanh (backends/llvm_math.py: a range reduction and a
polynomial, about seven dependent fmas, and tanh's division) gets `llvm.loop.interleave.count`
2: the vectoriser then computes two independent <8 x float> vectors an iteration, which the
CPU overlaps, where the cost model chose one (it weighs instruction counts, not latency).
Measured, old and new compiled into one process and timed interleaved: in cache (32K
floats, one thread) W4's chain 0.90x the time, exp(-x*x) 0.90x, sigmoid 0.86x, tanh
0.94x (the two-branch tanh of then); W4's chain on 4M floats 0.91-0.94x; log, where it made
no difference, is left alone, and W1-W3 stayed within the noise (0.96-1.02x). Interleaving 4
was no better, also with today's one-formula tanh (W4's chain on 4M floats, 2 threads: 1, 3
and 4 against 2 took 1.06x, 1.07x, 1.00x).
"""
from __future__ import annotations

from graphc import kernel as K
from graphc.types import DType

INTERLEAVE = 2    # vectors an iteration of a loop that computes exp or tanh (see above)
ROW_BYTES = 256   # a row that fits 8 AVX registers (64 float32, 32 float64): with the
# multiplicand and a broadcast, still within AVX2's 16 vector registers


def register_row(loop: K.Loop) -> bool:
    """Is `loop` an innermost loop accumulating a float row in memory, out[j] += x (unit
    stride in the loop variable, at most ROW_BYTES, x not reading out: no dependence that
    would stop the vectoriser, which would then warn that it could not do as asked): the
    loop that gets the metadata?"""
    if loop.parallel or loop.extent < 2 or any(isinstance(s, K.Loop) for s in loop.body):
        return False
    for s in loop.body:
        if (isinstance(s, K.Store) and s.buffer.dtype.is_float
                and loop.extent * s.buffer.dtype.itemsize <= ROW_BYTES
                and isinstance(s.value, K.Binary) and s.value.op == "add"
                and s.value.a == K.Load(s.buffer, s.index)
                and s.buffer not in K.loads(s.value.b)
                and K.stride(s.index, loop.var) == 1):
            return True
    return False


def interleaved(loop: K.Loop) -> bool:
    """Is `loop` an innermost loop computing a float32 exp or tanh (backends/llvm_math.py's
    polynomials; float64 has no IR polynomial: llvm.exp, libm's tanh): the loop that is
    vectorised with INTERLEAVE independent vectors an iteration?"""
    if any(isinstance(s, K.Loop) for s in loop.body):
        return False
    return any(isinstance(x, K.Unary) and x.op in ("exp", "tanh") and x.dtype is DType.float32
               for x in K.values(loop.body))


def row_loop_id(module):
    """A new loop ID node for one loop (vectorise, then fully unroll what the vectoriser
    made)."""
    from llvmlite import ir
    s = lambda x: ir.MetaDataString(module, x)  # noqa: E731
    full = module.add_metadata([s("llvm.loop.unroll.full")])
    return _loop_id(module, [s("llvm.loop.vectorize.enable"), ir.Constant(ir.IntType(1), 1)],
                    [s("llvm.loop.vectorize.followup_all"), full])


def interleave_loop_id(module):
    """A new loop ID node asking the vectoriser for INTERLEAVE vectors an iteration."""
    from llvmlite import ir
    return _loop_id(module, [ir.MetaDataString(module, "llvm.loop.interleave.count"),
                             ir.Constant(ir.IntType(32), INTERLEAVE)])


def _loop_id(module, *props):
    """A loop ID: a node whose first operand is itself, then one node per property (shared
    within the module: add_metadata returns the existing node for the same operands)."""
    from llvmlite import ir
    nodes = [module.add_metadata(p) for p in props]
    # not add_metadata: it hashes the operands, and this node is one of its own
    loop_id = ir.MDValue(module, [], name=str(len(module.metadata)))
    loop_id.operands = (loop_id, *nodes)
    return loop_id
