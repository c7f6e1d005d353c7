"""The core never depends on a backend: importing it loads no backend module and no
backend library, and no core source file imports graphc.backends (the CLI and the demo
are the edges that may)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EDGES = {"graphc/cli.py", "graphc/demo.py"}
CORE_DIRS = ("graphc", "frontends")  # frontends/ is installed as graphc.frontends

_IMPORT = re.compile(r"^\s*(import\s+graphc\.backends\b|from\s+graphc\.backends\b"
                     r"|from\s+graphc\s+import\s+(.*\s)?backends\b)", re.M)


def test_importing_the_core_loads_no_backend():
    code = (
        "import sys, json\n"
        "import graphc, graphc.pipeline, graphc.passes.autodiff, graphc.passes.simplify\n"
        "import graphc.frontends.api, graphc.interpret, graphc.verify, graphc.printer\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    mods = json.loads(r.stdout.strip().splitlines()[-1])
    assert "graphc" in mods and "graphc.pipeline" in mods
    bad = [m for m in mods if m == "graphc.backends" or m.startswith("graphc.backends.")
           or m.split(".")[0] in ("llvmlite", "pyopencl")]
    assert bad == []


def test_compiling_with_numpy_loads_only_the_numpy_backend():
    code = (
        "import sys, json, numpy as np, graphc as gc\n"
        "gc.compile(lambda x: x + 1.0)(np.ones(2))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    mods = json.loads(r.stdout.strip().splitlines()[-1])
    assert "graphc.backends.numpy" in mods
    assert not [m for m in mods if m.split(".")[0] in ("llvmlite", "pyopencl")]


def _core_files():
    for d in CORE_DIRS:
        for p in sorted((ROOT / d).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            if rel not in EDGES:
                yield rel, p


def test_no_core_file_imports_graphc_backends():
    files = list(_core_files())
    assert any(rel == "graphc/ir.py" for rel, _ in files)
    offenders = []
    for rel, p in files:
        for m in _IMPORT.finditer(p.read_text(encoding="utf-8")):
            line = p.read_text(encoding="utf-8")[:m.start()].count("\n") + 1
            offenders.append(f"{rel}:{line}: {m.group(0).strip()}")
    assert offenders == []


def test_the_import_pattern_catches_what_it_should():
    for s in ("import graphc.backends", "from graphc.backends import get",
              "    from graphc.backends.numpy import NumpyBackend", "from graphc import backends",
              "from graphc import errors, backends"):
        assert _IMPORT.search(s), s
    for s in ("import graphc.backend", "from graphc.backend import Program",
              "# see graphc.backends for the registry", ">>> from graphc import backends"):
        assert not _IMPORT.search(s), s
