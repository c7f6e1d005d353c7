"""graphc's errors. Each names the stage, the node (with its input shapes) and the user's line."""
from __future__ import annotations


class GraphcError(Exception):
    """Base class of every error graphc raises on purpose.

    `stage` is the pipeline stage ("trace", "backward", "verify", "run", ...),
    `node` the printed node (or None), `loc` the user's "file:line" (or None).
    """

    def __init__(self, message: str, *, stage: str | None = None, node: str | None = None,
                 loc: str | None = None, hint: str | None = None):
        self.stage, self.node, self.loc, self.hint = stage, node, loc, hint
        self.message = message
        parts = [f"[graphc:{stage}] {message}" if stage else f"[graphc] {message}"]
        if node:
            parts.append(f"  node: {node}")
        if loc:
            parts.append(f"  at:   {loc}")
        if hint:
            parts.append(f"  hint: {hint}")
        super().__init__("\n".join(parts))


class ShapeError(GraphcError):
    """Shapes or dtypes of an op's inputs do not fit the op."""


class VerifyError(GraphcError):
    """The IR broke an invariant between two stages (a graphc bug, or a bad hand-built graph)."""


class NoRuleError(GraphcError):
    """An op has no rule in a table (VJP, lowering)."""


class SignatureError(GraphcError):
    """A compiled function was called with arguments that do not fit what it was compiled for."""


class BackendError(GraphcError):
    """A backend is unknown, unavailable, or failed to build or run code."""
