"""Loading a model file for the `graphc` command line (`graphc.cli`): the file convention
(EXAMPLES, ENTRY, FILE.py:FUNCTION, described in `graphc.cli`), picking the function and its
example arguments, wrapping it for --grad, and the errors in the user's code as one-line
usage errors (exit status 2).
"""
from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import traceback
from pathlib import Path

from graphc.compare_base import _is_float_leaf
from graphc.errors import GraphcError


class UsageError(Exception):
    """A mistake in what the user gave: printed as one line, exit status 2."""


def split_target(target: str) -> tuple[Path, str | None]:
    """'dir/model.py:loss' -> (Path('dir/model.py'), 'loss'); 'model.py' -> (path, None)."""
    head, sep, tail = target.rpartition(":")
    if sep and tail.isidentifier() and len(head) > 1:
        return Path(head), tail
    if sep and tail == "" and len(head) > 1:
        raise UsageError(f"{target!r}: empty function name after ':'")
    return Path(target), None


@contextlib.contextmanager
def _on_sys_path(folder: str):
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass


def _module_name(path: Path) -> str:
    name = re.sub(r"\W", "_", path.stem) or "model"
    if name[0].isdigit():
        name = "_" + name
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) != str(path):
        name = f"graphc_model_{name}"  # do not shadow an imported module (e.g. a 'numpy.py')
    return name


def load_module(path: Path):
    """Import a model file from its path (its folder on sys.path while it loads)."""
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if not path.is_file():
        raise UsageError(f"not a file: {path}")
    if path.suffix != ".py":
        raise UsageError(f"{path}: a model file must be a Python file (.py)")
    path = path.resolve()
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _on_sys_path(str(path.parent)):
            spec.loader.exec_module(module)
    except GraphcError:
        sys.modules.pop(name, None)
        raise
    except Exception as e:
        sys.modules.pop(name, None)
        raise UsageError(f"loading {path.name} failed: {_describe(e, path)}") from None
    return module


def _describe(e: BaseException, path: Path | None = None) -> str:
    """'NameError: name 'x' is not defined (at model.py:12)': the innermost frame in `path`."""
    text = "".join(traceback.format_exception_only(type(e), e)).strip().replace("\n", " ")
    where = None
    for frame in traceback.extract_tb(e.__traceback__):
        if path is None or Path(frame.filename).resolve() == path.resolve():
            where = f"{Path(frame.filename).name}:{frame.lineno}"
    if isinstance(e, SyntaxError) and e.lineno:
        where = f"{Path(e.filename or '?').name}:{e.lineno}"
    return text + (f" (at {where})" if where else "")


def resolve_function(module, path: Path, fname: str | None):
    """(function name, function, example args tuple) by the model file convention."""
    examples = getattr(module, "EXAMPLES", None)
    if examples is None:
        raise UsageError(f"{path.name} has no module-level EXAMPLES dict "
                         f'(EXAMPLES = {{"function_name": (arg1, arg2, ...)}})')
    if not isinstance(examples, dict):
        raise UsageError(f"{path.name}: EXAMPLES must be a dict of function name -> tuple of "
                         f"args, not {type(examples).__name__}")
    if fname is None:
        fname = getattr(module, "ENTRY", None)
        if fname is None:
            if not examples:
                raise UsageError(f"{path.name}: EXAMPLES is empty; name a function with "
                                 f"{path.name}:FUNCTION")
            fname = next(iter(examples))
    fn = getattr(module, fname, None)
    if fn is None:
        known = [k for k in examples if callable(getattr(module, k, None))]
        raise UsageError(f"{path.name} has no function {fname!r}"
                         + (f"; functions with EXAMPLES: {', '.join(known)}" if known else ""))
    if not callable(fn):
        raise UsageError(f"{path.name}: {fname!r} is not a function")
    if fname not in examples:
        raise UsageError(f"{path.name}: EXAMPLES has no entry for {fname!r} "
                         f"(add EXAMPLES[{fname!r}] = (arg1, arg2, ...))")
    args = examples[fname]
    if not isinstance(args, tuple):
        args = (args,) if not isinstance(args, list) else tuple(args)
    return fname, fn, args


def float_argnums(args: tuple) -> tuple[int, ...]:
    """Indices of the arguments that are float arrays (or pytrees of only float arrays)."""
    from graphc.frontends import pytree
    nums = []
    for i, a in enumerate(args):
        try:
            leaves = pytree.flatten(a)[0]
        except TypeError:
            continue
        if leaves and all(_is_float_leaf(x) for x in leaves):
            nums.append(i)
    return tuple(nums)


def _called_from_def(vg, fn, path: Path):
    """Wrap `vg` in a function whose code claims to sit at fn's `def` line in the model file,
    so the grad markers it creates point there (not at graphc's own frames)."""
    code = getattr(fn, "__code__", None)
    line = code.co_firstlineno if code is not None else 1
    filename = code.co_filename if code is not None else str(path.resolve())
    name = fn.__name__ if getattr(fn, "__name__", "").isidentifier() else "entry"
    src = "\n" * (line - 1) + f"def {name}(*args): return vg(*args)\n"
    scope = {"vg": vg}
    exec(compile(src, filename, "exec"), scope)
    entry = scope[name]
    entry.__name__ = entry.__qualname__ = vg.__name__
    entry.__doc__ = vg.__doc__
    entry.__wrapped__ = vg  # inspect.signature (the input names) sees fn's parameters
    return entry


def check_argnums(nums, fname: str, args) -> None:
    """Every index in `nums` names one of the example arguments, or a UsageError."""
    for i in nums:
        if not -len(args) <= i < len(args):
            raise UsageError(f"--argnums {','.join(map(str, nums))}: {fname} takes "
                             f"{len(args)} example arguments")


def build(ns):
    """Load the model, pick the function, wrap it for --grad, compile and lower it.
    Returns (compiled function, its name)."""
    import graphc as gc
    path, fname, fn, args = _load_target(ns)
    if ns.grad or ns.argnums is not None:
        nums = ns.argnums if ns.argnums is not None else float_argnums(args)
        if not nums:
            raise UsageError(f"--grad: {fname} has no float-array argument to differentiate")
        check_argnums(nums, fname, args)
        fn = _called_from_def(gc.value_and_grad(fn, argnums=nums), fn, path)
    compiled = gc.compile(fn, backend=ns.backend, passes=ns.passes)
    try:
        with _on_sys_path(str(path.resolve().parent)):
            compiled.lower(*args)
    except GraphcError:
        raise
    except Exception as e:
        raise UsageError(f"tracing {fname} failed: {_describe(e, path)}") from None
    return compiled, fname


def _load_target(ns):
    """(model path, function name, function, example args) by the model file convention."""
    path, fname = split_target(ns.target)
    module = load_module(path)
    fname, fn, args = resolve_function(module, path, fname)
    return path, fname, fn, args


def _running(fname, path, call):
    """Run `call()`; an exception in the model's own code is a usage error (exit 2)."""
    try:
        with _on_sys_path(str(path.resolve().parent)):
            return call()
    except GraphcError:
        raise
    except Exception as e:
        raise UsageError(f"running {fname} failed: {_describe(e, path)}") from None
