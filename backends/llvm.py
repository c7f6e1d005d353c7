"""The LLVM backend: each fused kernel is lowered to the kernel IR (`graphc.lower`), built
as an LLVM function with `llvmlite.ir.IRBuilder`, verified, optimised at O3 for the host
CPU, JIT-compiled with MCJIT and called through ctypes on numpy buffers.

    kernel IR --(llvm_codegen.py)--> LLVM IR --(O3, host CPU)--> machine code --(ctypes)--> run

A kernel function takes one pointer per buffer (inputs, then the output) and `i64 start,
end`: the range of its outermost loop, so the runtime can split the loop over threads
(ctypes releases the GIL during the call). Floats follow IEEE (no fast-math) unless the
backend is built with `fast_math=True`. llvmlite is imported inside functions only, so
`import graphc.backends` stays light.

Beside this file: backends/llvm_math.py (float32 exp/log/tanh in IR, so loops vectorise),
backends/llvm_codegen.py (the kernel IR as LLVM IR, the op tables),
backends/llvm_gemm.py (a packed 6x16 FMA GEMM that big float32 matmul kernels run on, their
elementwise epilogue after it; its IR in llvm_gemm_ir.py and llvm_gemm_parts.py, skinny
products as dot products in llvm_gemm_dot.py), backends/llvm_cache.py (compiled object code
cached in memory and on disk, `$GRAPHC_CACHE_DIR` or ~/.cache/graphc;
`program.compile_info` tells where the code came from and how long each phase took),
backends/llvm_runtime.py (calling the kernels: threads, the arena, argument addresses),
backends/llvm_pool.py (native worker threads that take kernel and GEMM chunks),
backends/llvm_driver.py (runs of kernels called by one native function),
backends/llvm_loops.py (loop metadata: the one-row matmul's output row kept in registers,
two vectors an iteration in exp and tanh loops), backends/llvm_rows.py (a parallel loop over
big rows prefetches the rows ahead; softmax's division of a row runs in the exp pass of the
next). Before code
generation each kernel's loops are partitioned where a pad/concat bounds check changes
(`graphc.kernel_sched.partition`), nests that walk memory contiguously become one loop
(`graphc.kernel_layout.collapse`: LLVM leaves loops of fewer than 16 iterations scalar),
and an in-place kernel reads its dying input through its output's name, so its pointers can
be `noalias` (`llvm_runtime.in_place`).
"""
from __future__ import annotations

import ctypes
import time

from graphc import kernel as K, kernel_layout, kernel_sched
from graphc.ir import Graph, Node, register_internal_dir

register_internal_dir(__file__)
from graphc.backends.llvm_codegen import (  # noqa: E402,F401  (UNARY, BINARY: re-exported)
    BINARY, UNARY, build_module)

from graphc.backends.runtime import kernel_nodes  # noqa: E402
from graphc.backends.llvm_runtime import (  # noqa: E402
    LLVMProgram, _separate, _Step, in_place)
from graphc.backends.llvm_pool import cpus as _cpus  # noqa: E402


# ---- JIT ----------------------------------------------------------------------------------------------
_TARGET: list = []


def _target():
    """(target machine for optimisation, triple, data layout), made once."""
    if not _TARGET:
        import llvmlite.binding as llvm
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        tm = _machine()
        _TARGET.extend([tm, llvm.get_process_triple(), str(tm.target_data)])
    return _TARGET


def new_module(name: str):
    """An empty llvmlite module for the host: its triple and data layout set."""
    from llvmlite import ir
    m = ir.Module(name)
    m.triple, m.data_layout = _target()[1], _target()[2]
    return m


def _machine():
    import llvmlite.binding as llvm
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, codemodel="jitdefault")


def jit_info(module_text: str, names: list[str], opt: int = 3, unroll: bool = True):
    """Parse, verify, optimise (new pass manager) and JIT a module: ({name: address},
    llvm_cache.CompileInfo: memory/disk/compiled and phase times). Cached in memory and on
    disk (backends/llvm_cache.py)."""
    from graphc.backends import llvm_cache
    return llvm_cache.lookup(module_text, names, opt, _target()[0], _machine, unroll)


def jit_functions(module_text: str, signatures: dict, opt: int = 3,
                  unroll: bool = True) -> dict:
    """JIT a module (`jit_info`) and wrap each function named in `signatures` ({name:
    ctypes argument types}, returning void) as a ctypes function: {name: function}, plus
    "addrs" ({name: address}, for the native pool) and "info" (the CompileInfo, which keeps
    the engine, and so the functions, alive)."""
    addrs, info = jit_info(module_text, list(signatures), opt, unroll)
    fns = {name: ctypes.CFUNCTYPE(None, *args)(addrs[name]) for name, args in signatures.items()}
    return {**fns, "addrs": addrs, "info": info}


def clear_memory_cache():
    """Forget the compiled modules held in memory (the disk cache stays; programs compiled
    before keep their code alive)."""
    from graphc.backends import llvm_cache
    llvm_cache.clear_memory()


def optimized_ir(module_text: str, opt: int = 3, unroll: bool | None = None) -> str | None:
    """The optimised LLVM IR of a module compiled before (for inspection; unroll None: with
    or without loop unrolling, whichever was compiled)."""
    from graphc.backends import llvm_cache
    for u in ((False, True) if unroll is None else (unroll,)):
        text = llvm_cache.optimized_ir(module_text, opt, u)
        if text is not None:
            return text
    return None


class LLVMBackend:
    """Options: `fast_math` (let LLVM reassociate float math: faster reductions, results differ
    in the last bits), `threads` (default: one per CPU the process may use; how many
    threads a kernel or GEMM runs on: 1 keeps everything on the calling thread, n runs its
    chunks on the caller and n - 1 native workers, which share any job of more tasks, such
    as packing a shared B), `opt` (0-3), `gemm` (float32 matmul kernels big enough run on
    the packed GEMM of backends/llvm_gemm.py, their elementwise epilogue after it; False
    keeps the loop kernels), `unroll` (LLVM's loop unrolling, off by default: on W1/W2/W3 of
    benchmarks/workloads.py it compiled 2-5x faster and ran as fast (the vectoriser still
    interleaves); the GEMM module keeps it), `partition` (split loops where a concat/pad
    bounds check changes, so each piece computes only its own part:
    `graphc.kernel_sched.partition`; W3's LSTM step took 21 instead of 37 ms of CPU time on
    one thread)."""
    name = "llvm"

    def __init__(self, fast_math: bool = False, threads: int | None = None, opt: int = 3,
                 gemm: bool = True, unroll: bool = False, partition: bool = True):
        self.fast_math, self.opt, self.gemm, self.unroll = fast_math, opt, gemm, unroll
        self.partition = partition
        self.threads = threads or _cpus()

    def available(self):
        try:
            import llvmlite
            import llvmlite.binding as llvm
            _target()
        except Exception as e:  # a missing or broken llvmlite is an answer, not a crash
            return False, f"llvmlite unusable: {type(e).__name__}: {e}"
        v = ".".join(map(str, llvm.llvm_version_info))
        return True, f"llvmlite {llvmlite.__version__}, LLVM {v}, cpu {llvm.get_host_cpu_name()}"

    def lower(self, graph: Graph) -> tuple[Graph, list[Node], list[K.Kernel]]:
        return kernel_nodes(graph)

    def render(self, graph: Graph, nodes, kernels) -> tuple[str, str]:
        """(the LLVM module text, .source: that text annotated with the kernel IR and nodes)."""
        separate = frozenset(k.name for n, k in zip(nodes, kernels) if _separate(n, k))
        module = build_module(kernels, graph.name, self.fast_math, separate)
        text = str(module)
        src = text
        for k in kernels:
            note = "\n".join("; " + line for line in str(k).splitlines())
            src = src.replace(f'define void @"{k.name}"(', f'{note}\ndefine void @"{k.name}"(', 1)
        head = (f"; generated by graphc's llvm backend from graph {graph.name!r}"
                f"{' (fast-math)' if self.fast_math else ''}\n"
                f"; each function: the kernel IR it was built from, and the graph nodes\n")
        return text, head + src

    def compile(self, graph: Graph) -> LLVMProgram:
        from graphc.backends import llvm_gemm
        graph, nodes, kernels = self.lower(graph)
        gemms: dict = {}  # node index -> GemmSpec; its kernel becomes the epilogue (or none)
        if self.gemm:
            for i, (n, k) in enumerate(zip(nodes, kernels)):
                p = llvm_gemm.plan(n, k)
                if p is not None:
                    gemms[i], kernels[i] = p
        if self.partition:  # fold concat/pad selects per piece (graphc.kernel_sched)
            kernels = [k if k is None else kernel_sched.partition(k) for k in kernels]
        # contiguous loop pairs as one loop, so short rows vectorise (kernel_layout.collapse);
        # matmul kernels keep the loop shape the GEMV/GEMM paths expect
        kernels = [k if k is None or k.kind == "matmul" else kernel_layout.collapse(k)
                   for k in kernels]
        kernels = [k if k is None else in_place(n, k) for n, k in zip(nodes, kernels)]
        compiled = [k for k in kernels if k is not None]
        cnodes = [n for n, k in zip(nodes, kernels) if k is not None]
        text, source = self.render(graph, cnodes, compiled)
        t0 = time.perf_counter()
        addrs, info = jit_info(text, [k.name for k in compiled], self.opt, self.unroll)
        if gemms:
            llvm_gemm.sgemm_fn()
        steps = [_Step(n, k, addrs[k.name] if k is not None else None, self.threads,
                       gemms.get(i)) for i, (n, k) in enumerate(zip(nodes, kernels))]
        prog = LLVMProgram(graph, steps, source, compiled, text)
        prog.compile_info, prog.compile_s = info, time.perf_counter() - t0
        return prog
