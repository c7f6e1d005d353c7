"""The `graphc` command line: viz / show / code / stages / demo, the model file convention,
and its errors (one message, exit status 2, no traceback)."""
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from graphc import STAGES
from graphc.cli import float_argnums, main, split_target

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "examples" / "mlp.py"
LECTURE = ROOT / "examples" / "lecture_graph.py"
GRAPHC = Path(sys.executable).parent / "graphc"
SVG = "{http://www.w3.org/2000/svg}"


def run(args, capsys):
    """main(args) in-process -> (exit status, stdout, stderr); SystemExit is a status too."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == SVG + "svg", root.tag
    return [t.text for t in root.iter(SVG + "text") if t.text]


# ---- viz --------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_viz_every_stage_of_train_step_is_a_valid_svg(stage, tmp_path, capsys):
    out = tmp_path / f"{stage}.svg"
    code, stdout, err = run(["viz", f"{MLP}:train_step", "--stage", stage, "-o", out], capsys)
    assert code == 0, err
    assert str(out) in stdout
    texts = svg_texts(out)
    joined = "\n".join(texts)
    assert f"train_step: stage {stage}" in joined
    assert any(t.endswith(" matmul") for t in texts)   # node labels like '%6 matmul'
    assert any(t.endswith(" tanh") for t in texts)
    assert "params_W1" in joined and "legend" in joined
    if stage == "traced":
        assert any(t.endswith(" grad") for t in texts)     # the grad markers
        assert "grad marker" in joined
    else:
        assert not any(t.endswith(" grad") for t in texts)
        assert "(grad)" in joined                          # derived nodes name their line
    assert "backward (derived)" in joined


def test_viz_stage_all_writes_one_file_per_stage(tmp_path, capsys):
    out = tmp_path / "pics" / "ts.svg"
    code, stdout, err = run(["viz", f"{MLP}:train_step", "--stage", "all", "-o", out], capsys)
    assert code == 0, err
    for stage in STAGES:
        p = tmp_path / "pics" / f"ts.{stage}.svg"
        assert p.exists() and str(p) in stdout
        svg_texts(p)
    assert not out.exists()
    assert len(stdout.strip().splitlines()) == len(STAGES)


@pytest.mark.parametrize("backend", ["llvm", "opencl"])
def test_viz_kernels_draws_the_kernel_ir(backend, tmp_path, capsys):
    out = tmp_path / "k.svg"
    code, stdout, err = run(["viz", f"{MLP}:train_step", "--backend", backend, "--kernels",
                             "-o", out], capsys)
    assert code == 0, err
    texts = svg_texts(out)
    joined = "\n".join(texts)
    assert "train_step (" + backend + ") (kernel IR)" in joined
    kernels = [t for t in texts if t.startswith("kernel k")]
    assert len(kernels) == int(stdout.split()[1]) > 1       # one cluster per kernel
    assert any(t.startswith("for i0 < ") and t.endswith("(parallel)") for t in texts)
    assert any(t.startswith("out[") for t in texts) and any("f32 in0[" in t for t in texts)
    dot = tmp_path / "k.dot"
    assert run(["viz", f"{MLP}:train_step", "--backend", backend, "--kernels", "-o", dot],
               capsys)[0] == 0
    text = dot.read_text()
    assert text.count("subgraph cluster_k") == len(kernels)
    assert "style=invis" in text   # statements kept in execution order


def test_viz_kernels_needs_a_kernel_backend(tmp_path, capsys):
    code, _, err = run(["viz", MLP, "--kernels", "-o", tmp_path / "k.svg"], capsys)
    assert code == 2 and "no kernel IR" in err and "--backend llvm" in err
    code, _, err = run(["viz", MLP, "--kernels", "--backend", "llvm", "--diff",
                        "simplified:fused", "-o", tmp_path / "k.svg"], capsys)
    assert code == 2 and "--kernels" in err


def test_viz_png_and_dot(tmp_path, capsys):
    png, dot = tmp_path / "x.png", tmp_path / "x.dot"
    assert run(["viz", MLP, "--stage", "backward", "-o", png], capsys)[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run(["viz", f"{LECTURE}:f", "--grad", "--stage", "backward", "-o", dot], capsys)[0] == 0
    text = dot.read_text()
    assert text.startswith("digraph") and "dashed" in text


# ---- show / code / stages ---------------------------------------------------------------------
def test_show_is_deterministic_and_prints_the_ir(capsys):
    code1, out1, _ = run(["show", f"{MLP}:train_step"], capsys)
    code2, out2, _ = run(["show", f"{MLP}:train_step", "--stage", "optimized"], capsys)
    assert code1 == code2 == 0
    assert out1 == out2
    assert "= matmul" in out1 and out1.startswith("graph train_step(")
    assert "mlp.py:" in out1 and "(grad)" in out1


def test_show_every_stage_and_grad_option(capsys):
    code, out, _ = run(["show", LECTURE, "--stage", "all"], capsys)   # ENTRY = f_and_grads
    assert code == 0
    assert [l for l in out.splitlines() if l.startswith("# stage")] == \
        [f"# stage {s}" for s in STAGES]
    code, out, _ = run(["show", f"{LECTURE}:f", "--grad", "--stage", "traced"], capsys)
    assert code == 0
    assert "graph value_and_grad_f(%0:f32[] a, %1:f32[] b)" in out
    assert out.count("= grad ") == 2 and "lecture_graph.py:" in out
    code, out, _ = run(["show", f"{MLP}:loss", "--argnums", "0", "--stage", "traced"], capsys)
    assert code == 0 and out.count("= grad ") == 4   # the 4 leaves of params only


def test_code_prints_generated_numpy_source(capsys):
    code, out, err = run(["code", f"{MLP}:train_step", "--backend", "numpy"], capsys)
    assert code == 0, err
    assert "np.matmul" in out and "def " in out
    compile(out, "<generated>", "exec")   # it is Python


def test_stages_lists_node_counts(capsys):
    code, out, _ = run(["stages", f"{MLP}:train_step"], capsys)
    assert code == 0
    for stage in STAGES:
        assert any(l.split()[:1] == [stage] and "nodes" in l for l in out.splitlines())
    code, out, _ = run(["stages", f"{MLP}:loss"], capsys)
    assert code == 0 and "backward" not in out.split("(no backward")[0] and "--grad" in out


# ---- demo -------------------------------------------------------------------------------------
def test_demo_writes_every_stage_picture(tmp_path, capsys):
    code, out, err = run(["demo", "--out", tmp_path], capsys)
    assert code == 0, err
    for model in ("lecture", "mlp"):
        for stage in STAGES:
            p = tmp_path / f"{model}.{stage}.svg"
            assert str(p) in out
            svg_texts(p)
    assert "df/da = 2" in out and "df/db = 5" in out and "f = 6" in out
    assert "loss = " in out and "dloss/dW1" in out
    for stage in STAGES:
        assert any(l.strip().startswith(stage) and len(l) > 40 for l in out.splitlines())


# ---- --help -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["viz"], ["show"], ["code"], ["stages"], ["demo"]])
def test_help_for_every_command(command, capsys):
    code, out, _ = run(command + ["--help"], capsys)
    assert code == 0
    assert "usage: graphc" in out
    if command and command[0] != "demo":
        assert "EXAMPLES" in out and "ENTRY" in out and "--grad" in out


# ---- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["viz", "no/such/model.py"], "no such file: no/such/model.py"),
    (["show", f"{MLP}:nope"], "no function 'nope'"),
    (["viz", MLP, "--stage", "bogus"], "invalid choice: 'bogus'"),
    (["code", MLP, "--backend", "bogus"], "invalid choice: 'bogus'"),
    (["show", f"{MLP}:loss", "--stage", "backward"], "stage 'backward' does not exist"),
    (["viz", MLP, "-o", "x.jpg"], "cannot draw to x.jpg"),
    (["show", f"{MLP}:train_step", "--grad"], "grad needs train_step to return a float scalar"),
    (["show", str(ROOT / "pyproject.toml")], "must be a Python file"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    (["viz"], "required: FILE.py[:FUNCTION]"),
])
def test_bad_inputs_exit_2_with_a_message(args, needle, capsys):
    code, out, err = run(args, capsys)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err + out


# ---- the model file convention ----------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_model_file_convention(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "helpers.py", "def square(x):\n    return x * x\n")
    model = write(tmp_path / "model.py", """
        import numpy as np
        from helpers import square          # a sibling module: the folder is on sys.path

        def first(x):
            return x + 1.0

        def energy(w, x, n):
            for _ in range(n):               # ints are static: the loop unrolls
                x = square(x) * w
            return x.sum()

        EXAMPLES = {"first": (np.ones(3, np.float32),),
                    "energy": (np.ones(3), np.ones(3, np.float32), 2)}
        """)
    path_before = list(sys.path)
    code, out, _ = run(["show", model, "--stage", "traced"], capsys)   # first key of EXAMPLES
    assert code == 0 and out.startswith("graph first(")
    assert sys.path == path_before
    code, out, _ = run(["show", f"{model}:energy", "--grad"], capsys)
    assert code == 0 and out.startswith("graph value_and_grad_energy(")
    assert out.count("= mul") >= 4 and "(grad)" in out
    # default output path: out/FUNCTION.svg in the working directory
    code, out, _ = run(["viz", f"{model}:energy"], capsys)
    assert code == 0 and (tmp_path / "out" / "energy.svg").exists()

    write(tmp_path / "model.py", (tmp_path / "model.py").read_text() + 'ENTRY = "energy"\n')
    code, out, _ = run(["stages", model], capsys)
    assert code == 0 and out.startswith("energy:")


@pytest.mark.parametrize("body, needle", [
    ("def f(x):\n    return x\n", "no module-level EXAMPLES"),
    ("def f(x):\n    return x\nEXAMPLES = {'g': (1.0,)}\ng = 3\n", "'g' is not a function"),
    ("def f(x):\n    return x\nEXAMPLES = {}\n", "EXAMPLES is empty"),
    ("def f(x):\n    return x\nEXAMPLES = {'g': (1.0,)}\nENTRY = 'f'\n",
     "EXAMPLES has no entry for 'f'"),
    ("import numpy as np\nEXAMPLES = {'f': (np.ones(2),)}\ndef f(x):\n    return x + y\n",
     "NameError: name 'y' is not defined (at bad.py:4)"),
    ("def f(x:\n", "SyntaxError"),
    ("raise RuntimeError('boom')\n", "loading bad.py failed: RuntimeError: boom (at bad.py:1)"),
    ("import numpy as np\nEXAMPLES = {'f': (np.ones(2), np.ones(3))}\n"
     "def f(a, b):\n    return a + b\n", "[graphc:"),                     # a GraphcError
    ("EXAMPLES = {'f': (3,)}\ndef f(n):\n    return n * 2.0\n", "no float-array argument"),
])
def test_bad_model_files(body, needle, tmp_path, capsys):
    bad = write(tmp_path / "bad.py", body)
    extra = ["--grad"] if "no float-array" in needle else []
    code, out, err = run(["show", bad] + extra, capsys)
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err


def test_helpers():
    assert split_target("a/b.py:loss") == (Path("a/b.py"), "loss")
    assert split_target("a/b.py") == (Path("a/b.py"), None)
    assert split_target(r"C:\m\b.py") == (Path(r"C:\m\b.py"), None)
    import numpy as np
    args = ({"w": np.ones(2), "b": np.zeros(1, np.float32)}, np.ones(2, np.int32), 1.5, 3,
            np.float32(2))
    assert float_argnums(args) == (0, 2, 4)


# ---- the installed console script -------------------------------------------------------------
def test_console_script(tmp_path):
    out = tmp_path / "bw.svg"
    p = subprocess.run([GRAPHC, "viz", f"{MLP}:train_step", "--stage", "backward", "-o", out],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert any(t.endswith(" matmul") for t in svg_texts(out))
    p = subprocess.run([GRAPHC, "show", "missing.py"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == "graphc: error: no such file: missing.py"


# ---- the examples' own __main__ ---------------------------------------------------------------
def _load(path: Path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_main(tmp_path, capsys):
    _load(LECTURE).main(["--out", str(tmp_path), "--backend", "numpy"])
    out = capsys.readouterr().out
    assert "df/db = 5.0" in out and (tmp_path / "lecture.backward.svg").exists()
    _load(MLP).main(["--steps", "100"])
    losses = [float(l.split()[3]) for l in capsys.readouterr().out.splitlines()
              if l.startswith("step")]
    assert len(losses) == 3 and losses[-1] < 0.5 * losses[0]
