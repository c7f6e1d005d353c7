"""One native call for a run of kernel calls: the LLVM runtime's driver functions.

A program's kernels are called one by one from Python (backends/llvm_runtime.py, `_Step`):
per kernel a list of argument addresses and a ctypes call, ~3 us of CPU time here, as much
as a small kernel itself (batch-1 inference W5 b1: 3 kernels in ~75 us; W3's LSTM step:
about 550 kernel calls). Consecutive kernels that run on one thread without the packed GEMM
(a "run") are called instead by a driver function built here with IRBuilder:

    void graphc_run<r>(i64* fns, i64* base)
        for each kernel call c of run r:
            fns[c.step](base[b0] + o0, ..., base[bn] + on, 0, c.end)

`fns` holds the kernels' addresses (by step index; filled once per program), `base` the
call's base addresses (arena, inputs, allocated buffers, constants: LLVMProgram's plan);
the (base, offset) pairs and loop ends are constants in the driver. No address is in the
module text, so the driver is cached in memory and on disk like any kernel module
(backends/llvm_cache.py), and programs of the same plan share it.
"""
from __future__ import annotations

DRIVER_OPT = 1  # straight-line calls: nothing for O3 to find, and O1 compiles faster


def module_text(runs: list[list[tuple[int, list[tuple[int, int]], int]]]) -> str:
    """The driver module: function graphc_run<r> per run r, a run being a list of calls
    (step index, [(base index, byte offset) per pointer argument], end of the loop range)."""
    from llvmlite import ir
    from graphc.backends.llvm import new_module
    i64, i8p, void = ir.IntType(64), ir.IntType(8).as_pointer(), ir.VoidType()
    m = new_module("graphc_driver")
    c = lambda v: ir.Constant(i64, v)  # noqa: E731
    for r, calls in enumerate(runs):
        fn = ir.Function(m, ir.FunctionType(void, [i64.as_pointer()] * 2), f"graphc_run{r}")
        fn.attributes.add("nounwind")
        fns, base = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        # every base is loaded once, up front: a kernel call could write any memory as far
        # as LLVM knows, so a load after one would be repeated after each
        used = sorted({bi for _, spec, _ in calls for bi, _ in spec})
        bases = {bi: b.load(b.gep(base, [c(bi)])) for bi in used}
        for step, spec, end in calls:
            fty = ir.FunctionType(void, [i8p] * len(spec) + [i64, i64])
            callee = b.inttoptr(b.load(b.gep(fns, [c(step)])), fty.as_pointer())
            args = [b.inttoptr(b.add(bases[bi], c(off)) if off else bases[bi], i8p)
                    for bi, off in spec]
            b.call(callee, args + [c(0), c(end)])
        b.ret_void()
    return str(m)


def runs_of(simple: list[bool], min_len: int = 2) -> list[list[int]]:
    """Maximal runs of consecutive True entries (step indices), those of min_len or more."""
    out, cur = [], []
    for i, ok in enumerate(simple + [False]):
        if ok:
            cur.append(i)
        else:
            if len(cur) >= min_len:
                out.append(cur)
            cur = []
    return out


def build(runs: list[list[tuple[int, list[tuple[int, int]], int]]]):
    """({r: ctypes function (fns, base)}, CompileInfo keeping the code alive)."""
    import ctypes
    from graphc.backends.llvm import jit_functions
    arr = ctypes.POINTER(ctypes.c_int64)
    fns = jit_functions(module_text(runs), {f"graphc_run{r}": (arr, arr)
                                            for r in range(len(runs))}, DRIVER_OPT)
    return {r: fns[f"graphc_run{r}"] for r in range(len(runs))}, fns["info"]
