"""The LLVM backend's compile cache: memory, disk (object code via emit_object, loaded with
MCJIT's add_object_file), a second process that does not recompile, corrupt entries, off."""
import os
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc

L = pytest.importorskip("graphc.backends.llvm")
from graphc.backends import llvm_cache  # noqa: E402


def _fn(x):
    return gc.tanh(x) * 2.0 + gc.sin(x) * np.float32(0.5)


def _prog(x):
    return gc.compile(_fn, backend=L.LLVMBackend()).lower(x).program


def test_disk_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    x = np.linspace(-4, 4, 777).astype(np.float32)
    want = np.tanh(x) * 2 + np.sin(x) * np.float32(0.5)
    L.clear_memory_cache()
    p1 = _prog(x)
    assert p1.compile_info.source == "compiled"
    assert {"optimise", "codegen"} <= set(p1.compile_info.times)
    assert len(list(tmp_path.rglob("*.o"))) == 1
    assert _prog(x).compile_info.source == "memory"
    L.clear_memory_cache()
    p2 = _prog(x)
    assert p2.compile_info.source == "disk" and "codegen" not in p2.compile_info.times
    np.testing.assert_allclose(p2(x)[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1(x)[0], want, rtol=1e-5, atol=1e-6)  # p1's code still alive
    assert L.optimized_ir(p2.module_text) is not None
    for o in tmp_path.rglob("*.o"):  # a corrupt entry is recompiled
        o.write_bytes(b"garbage")
    L.clear_memory_cache()
    p3 = _prog(x)
    assert p3.compile_info.source == "compiled"
    np.testing.assert_allclose(p3(x)[0], want, rtol=1e-5, atol=1e-6)


def test_disk_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "off")
    assert llvm_cache.cache_dir() is None
    L.clear_memory_cache()
    x = np.ones(3, np.float32)
    assert _prog(x).compile_info.source == "compiled"


def test_key_depends_on_text_opt_and_cpu():
    k = llvm_cache.cache_key("a", 3)
    assert k != llvm_cache.cache_key("b", 3) and k != llvm_cache.cache_key("a", 2)


def test_second_process_does_not_recompile(tmp_path):
    code = ("import numpy as np, graphc as gc\n"
            "f = gc.compile(lambda x: gc.exp(x) * 3.0 - gc.log(x), backend='llvm')\n"
            "x = np.arange(1, 9, dtype=np.float32)\n"
            "p = f.lower(x).program\n"
            "assert np.allclose(f(x), np.exp(x) * 3 - np.log(x), rtol=1e-5)\n"
            "print(p.compile_info.source)\n")
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(tmp_path))
    run = lambda: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,  # noqa
                                 text=True, check=True).stdout.split()[-1]
    assert run() == "compiled"
    assert run() == "disk"
