"""The LLVM backend's compile cache: in memory (per process) and on disk (across runs).

    key = sha256(opt level, LLVM module text, llvmlite + LLVM version, host CPU name + features)

On a miss the module is parsed, verified, optimised (new pass manager, O`opt`) and turned
into object code with `TargetMachine.emit_object`; the object code (and the optimised IR
text, for inspection) is written to `$GRAPHC_CACHE_DIR/llvm` (default
~/.cache/graphc/llvm; `backends/runtime.cache_dir`) atomically (write to a temp file, then
rename). Either way the object code is loaded (after checking the sha256 stored in front of
it) with an MCJIT engine's `add_object_file` (llvmlite 0.50: an engine made from
an empty module, the object added, `finalize_object`, then `get_function_address`), so a
fresh process with a warm disk cache never runs the optimiser or the code generator.
`GRAPHC_CACHE_DIR=off` turns the disk cache off. An unreadable or corrupt entry is
recompiled (and rewritten); the cache is a pure optimisation.

Each lookup records where the code came from and how long each phase took (`CompileInfo`).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field

from graphc.errors import BackendError
from graphc.backends.runtime import cache_dir as shared_cache_dir

_MEMORY: dict[str, tuple] = {}  # key -> (engine, {name: address}, optimised IR text, info)
_LOCK = threading.Lock()


@dataclass
class CompileInfo:
    """Where a module's code came from ("memory" | "disk" | "compiled") and phase times (s)."""
    source: str
    key: str
    times: dict = field(default_factory=dict)
    engine: object = field(default=None, repr=False)  # keeps the code alive for its users

    @property
    def total_s(self) -> float:
        return sum(self.times.values())

    def __str__(self):
        parts = ", ".join(f"{k} {v * 1e3:.1f}ms" for k, v in self.times.items())
        return f"llvm code from {self.source} ({parts})"


def cache_dir() -> str | None:
    d = shared_cache_dir("llvm")  # one rule for every backend: $GRAPHC_CACHE_DIR/llvm, or off
    return None if d is None else str(d)


def cache_key(module_text: str, opt: int, unroll: bool = True) -> str:
    import llvmlite
    import llvmlite.binding as llvm
    h = hashlib.sha256()
    for part in (f"O{opt}{'' if unroll else '-unroll'}", llvmlite.__version__, ".".join(map(str, llvm.llvm_version_info)),
                 llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), module_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _paths(key: str):
    d = cache_dir()
    if d is None:
        return None
    return os.path.join(d, key[:2], key + ".o"), os.path.join(d, key[:2], key + ".ll")


def _write(path: str, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load(obj: bytes, names, machine):
    import llvmlite.binding as llvm
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    addrs = {n: engine.get_function_address(n) for n in names}
    if not all(addrs.values()):
        raise RuntimeError(f"missing symbols in cached object: "
                           f"{[n for n, a in addrs.items() if not a]}")
    return engine, addrs


def lookup(module_text: str, names: list[str], opt: int, target_machine, make_machine,
           unroll: bool = True):
    """({name: address}, CompileInfo) for a module, compiling it only when no cache has it."""
    import llvmlite.binding as llvm
    key = cache_key(module_text, opt, unroll)
    with _LOCK:
        hit = _MEMORY.get(key)
        if hit is not None and all(n in hit[1] for n in names):
            return hit[1], CompileInfo("memory", key, {}, hit[0])
        times: dict = {}
        paths = _paths(key)
        if paths is not None and os.path.exists(paths[0]):
            t0 = time.perf_counter()
            try:
                with open(paths[0], "rb") as f:
                    blob = f.read()
                obj = blob[32:]  # sha256(object code) + object code: never feed LLVM junk
                if hashlib.sha256(obj).digest() != blob[:32]:
                    raise RuntimeError("checksum mismatch")
                engine, addrs = _load(obj, names, make_machine())
                times["load"] = time.perf_counter() - t0
                text = None
                if os.path.exists(paths[1]):
                    with open(paths[1]) as f:
                        text = f.read()
                info = CompileInfo("disk", key, times, engine)
                _MEMORY[key] = (engine, addrs, text, info)
                return addrs, info
            except (OSError, RuntimeError):
                pass  # corrupt or unreadable: compile again below
        t0 = time.perf_counter()
        try:
            mod = llvm.parse_assembly(module_text)
            mod.verify()
        except RuntimeError as e:  # the verifier's message, verbatim
            raise BackendError(f"LLVM rejected the generated module:\n{e}",
                               stage="compile (llvm)") from e
        times["parse+verify"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if opt:
            pto = llvm.create_pipeline_tuning_options(speed_level=opt)
            pto.loop_unrolling = unroll
            pb = llvm.create_pass_builder(target_machine, pto)
            pb.getModulePassManager().run(mod, pb)
        text = str(mod)
        times["optimise"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        machine = make_machine()
        obj = machine.emit_object(mod)
        times["codegen"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine, addrs = _load(obj, names, machine)
        times["load"] = time.perf_counter() - t0
        if paths is not None:
            try:
                _write(paths[0], hashlib.sha256(obj).digest() + obj)
                _write(paths[1], text.encode())
            except OSError:
                pass  # a read-only or full disk only costs the next run a compile
        info = CompileInfo("compiled", key, times, engine)
        _MEMORY[key] = (engine, addrs, text, info)
        return addrs, info


def optimized_ir(module_text: str, opt: int, unroll: bool = True) -> str | None:
    hit = _MEMORY.get(cache_key(module_text, opt, unroll))
    return hit[2] if hit else None


def clear_memory():
    with _LOCK:
        _MEMORY.clear()
