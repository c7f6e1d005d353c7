"""The LLVM backend's code generation: one kernel of the kernel IR (`graphc.kernel`) -> one
LLVM function, built with `llvmlite.ir.IRBuilder` (`_Codegen`), and `build_module` for a
program's kernels. The op tables (`UNARY`, `BINARY`, keyed by (op name, kind)) are the
backend's one lowering table; backends/llvm.py compiles what this builds, and
backends/llvm_runtime.py runs it.

A kernel function takes one pointer per buffer (inputs, then the output) and `i64 start,
end`: the range of its outermost loop, so the runtime can split the loop over threads.
"""
from __future__ import annotations

from graphc import kernel as K
from graphc.errors import BackendError, NoRuleError
from graphc.ir import register_internal_dir
from graphc.types import DType

register_internal_dir(__file__)
from graphc.backends.llvm_math import F32 as F32_MATH  # noqa: E402
from graphc.backends.llvm_loops import (interleave_loop_id, interleaved, register_row,  # noqa: E402
                                        row_loop_id)
from graphc.backends.llvm_rows import (emit_pipelined, emit_prefetch, pipelined,  # noqa: E402
                                       prefetch_rows)


# ---- types and the op tables ------------------------------------------------------------------------
def ir_type(dtype: DType, storage: bool = False):
    """The LLVM type of a value of `dtype` (bool is i1 in registers, i8 in memory)."""
    from llvmlite import ir
    if dtype is DType.bool:
        return ir.IntType(8 if storage else 1)
    return {DType.float32: ir.FloatType(), DType.float64: ir.DoubleType(),
            DType.int32: ir.IntType(32), DType.int64: ir.IntType(64)}[dtype]


def _kind(dtype: DType) -> str:
    return "float" if dtype.is_float else "bool" if dtype is DType.bool else "int"


_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


def _is_f32(g, x):
    return isinstance(x.type, g.ir.FloatType)


def _f_max(g, a, b, less=False):
    # NaN propagates as in numpy: maximum(nan, 1) = nan, maximum(1, nan) = nan
    keep_a = g.b.fcmp_ordered("<" if less else ">", a, b, flags=g.fm)
    r = g.b.select(keep_a, a, b)
    return g.b.select(g.b.fcmp_unordered("uno", a, a), a, r)


def _i_div(g, a, b):
    # truncation toward zero like C; x/0 -> 0 and MIN/-1 -> MIN as the reference (no trap)
    zero, one, m1 = (g.const(v, a.type) for v in (0, 1, -1))
    is0, ism1 = g.b.icmp_signed("==", b, zero), g.b.icmp_signed("==", b, m1)
    safe = g.b.select(g.b.or_(is0, ism1), one, b)
    q = g.b.select(ism1, g.b.sub(zero, a), g.b.sdiv(a, safe))
    return g.b.select(is0, zero, q)


def _f_sign(g, x):
    one, m1 = g.const(1.0, x.type), g.const(-1.0, x.type)
    neg = g.b.select(g.b.fcmp_ordered("<", x, g.const(0.0, x.type)), m1, x)  # 0, -0, nan stay
    return g.b.select(g.b.fcmp_ordered(">", x, g.const(0.0, x.type)), one, neg)


def _i_sign(g, x):
    z = g.const(0, x.type)
    return g.b.sub(g.b.zext(g.b.icmp_signed(">", x, z), x.type),
                   g.b.zext(g.b.icmp_signed("<", x, z), x.type))


# (op, kind) -> fn(codegen, *operands) -> ir value. The kernel IR's op names are graphc's Op values.
UNARY = {
    ("neg", "float"): lambda g, x: g.b.fneg(x, flags=g.fm),
    ("neg", "int"): lambda g, x: g.b.sub(g.const(0, x.type), x),
    **{(op, "float"): (lambda op: lambda g, x: g.intrinsic(f"llvm.{op}", x))(op)
       for op in ("sqrt", "sin", "cos")},
    # float32 exp/log/tanh: IR approximations that vectorise (backends/llvm_math.py)
    **{(op, "float"): (lambda op, f64: lambda g, x: (F32_MATH[op](g, x) if _is_f32(g, x)
                                                     else f64(g, x)))(op, f64)
       for op, f64 in (("exp", lambda g, x: g.intrinsic("llvm.exp", x)),
                       ("log", lambda g, x: g.intrinsic("llvm.log", x)),
                       ("tanh", lambda g, x: g.libm("tanh", x)))},
    ("abs", "float"): lambda g, x: g.intrinsic("llvm.fabs", x),
    ("abs", "int"): lambda g, x: g.b.select(g.b.icmp_signed("<", x, g.const(0, x.type)),
                                            g.b.sub(g.const(0, x.type), x), x),
    ("sign", "float"): _f_sign,
    ("sign", "int"): _i_sign,
    ("reciprocal", "float"): lambda g, x: g.b.fdiv(g.const(1.0, x.type), x, flags=g.fm),
}
BINARY = {
    ("add", "float"): lambda g, a, b: g.b.fadd(a, b, flags=g.fm),
    ("sub", "float"): lambda g, a, b: g.b.fsub(a, b, flags=g.fm),
    ("mul", "float"): lambda g, a, b: g.b.fmul(a, b, flags=g.fm),
    ("div", "float"): lambda g, a, b: g.b.fdiv(a, b, flags=g.fm),
    ("pow", "float"): lambda g, a, b: g.intrinsic("llvm.pow", a, b),
    ("maximum", "float"): _f_max,
    ("minimum", "float"): lambda g, a, b: _f_max(g, a, b, less=True),
    ("add", "int"): lambda g, a, b: g.b.add(a, b),
    ("sub", "int"): lambda g, a, b: g.b.sub(a, b),
    ("mul", "int"): lambda g, a, b: g.b.mul(a, b),
    ("div", "int"): _i_div,
    ("maximum", "int"): lambda g, a, b: g.b.select(g.b.icmp_signed(">", a, b), a, b),
    ("minimum", "int"): lambda g, a, b: g.b.select(g.b.icmp_signed("<", a, b), a, b),
    **{(op, "float"): (lambda c: lambda g, a, b: g.b.fcmp_ordered(c, a, b, flags=g.fm))(c)
       for op, c in _CMP.items() if op != "ne"},
    ("ne", "float"): lambda g, a, b: g.b.fcmp_unordered("!=", a, b, flags=g.fm),  # nan != nan
    **{(op, "int"): (lambda c: lambda g, a, b: g.b.icmp_signed(c, a, b))(c)
       for op, c in _CMP.items()},
    ("eq", "bool"): lambda g, a, b: g.b.icmp_unsigned("==", a, b),
    ("ne", "bool"): lambda g, a, b: g.b.icmp_unsigned("!=", a, b),
}


def _cast(g, x, src: DType, dst: DType):
    b, t = g.b, ir_type(dst)
    if src is dst:
        return x
    if dst is DType.bool:
        return (b.fcmp_unordered("!=", x, g.const(0.0, x.type)) if src.is_float  # nan -> True
                else b.icmp_signed("!=", x, g.const(0, x.type)))
    if src is DType.bool:
        return b.uitofp(x, t) if dst.is_float else b.zext(x, t)
    if src.is_float and dst.is_float:
        return b.fpext(x, t) if dst.itemsize > src.itemsize else b.fptrunc(x, t)
    if src.is_float:
        return b.fptosi(x, t)
    if dst.is_float:
        return b.sitofp(x, t)
    return b.sext(x, t) if dst.itemsize > src.itemsize else b.trunc(x, t)


# ---- kernel IR -> one LLVM function ------------------------------------------------------------------
class _Codegen:
    def __init__(self, module, kernel: K.Kernel, fast_math: bool, noalias: bool = False):
        from llvmlite import ir
        self.ir, self.module, self.k = ir, module, kernel
        self.fm = ("fast",) if fast_math else ()
        self.i64 = ir.IntType(64)
        args = [ir_type(b.dtype, storage=True).as_pointer() for b in kernel.args]
        fnty = ir.FunctionType(ir.VoidType(), args + [self.i64, self.i64])
        self.fn = ir.Function(module, fnty, kernel.name)
        self.fn.attributes.add("nounwind")
        self.ptr = {b.name: a for b, a in zip(kernel.args, self.fn.args)}
        for b, a in zip(kernel.args, self.fn.args):
            a.name = b.name
            if noalias:  # lets LLVM keep a matmul row in registers, drop runtime alias checks
                a.add_attribute("noalias")
        self.start, self.end = self.fn.args[-2], self.fn.args[-1]
        self.start.name, self.end.name = "start", "end"
        for name, c in kernel.consts:  # small constants baked into the module
            arr = c.array.reshape(-1)
            dt = DType.of(c.array)
            et = ir_type(dt, storage=True)
            aty = ir.ArrayType(et, arr.size)
            gv = ir.GlobalVariable(module, aty, f"{kernel.name}.{name}")
            gv.global_constant, gv.linkage = True, "internal"
            gv.initializer = ir.Constant(aty, [ir.Constant(et, int(v) if not dt.is_float
                                                           else float(v)) for v in arr.tolist()])
            self.ptr[name] = gv
        self.entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.vars: dict = {}
        self.vals: dict = {}

    def const(self, v, ty):
        return self.ir.Constant(ty, v)

    def intrinsic(self, name, *xs):
        f = self.module.declare_intrinsic(name, [xs[0].type])
        return self.b.call(f, list(xs), fastmath=self.fm)

    def libm(self, name, x):
        """A call of the C library's double function `name` (float32 math has no libm call:
        backends/llvm_math.py)."""
        f = self.module.globals.get(name)
        if f is None:
            f = self.ir.Function(self.module, self.ir.FunctionType(x.type, [x.type]), name)
        return self.b.call(f, [x], fastmath=self.fm)

    # ---- statements ----
    def clamp(self, x, n: int):
        """min(max(x, 0), n) for an i64."""
        b, zero, top = self.b, self.const(0, self.i64), self.const(n, self.i64)
        x = b.select(b.icmp_signed("<", x, zero), zero, x)
        return b.select(b.icmp_signed(">", x, top), top, x)

    def build(self):
        self.stmts(self.k.body)
        self.b.ret_void()
        return self.fn

    def stmts(self, body):
        b = self.b
        offset = 0  # where this piece of the parallel loop starts in its range (`K.Loop`)
        for s in body:
            if isinstance(s, K.Loop):
                if s.parallel:  # this piece's part of start..end, in its own variable
                    lo, hi = (self.clamp(b.sub(x, self.const(offset, self.i64)), s.extent)
                              for x in (self.start, self.end))
                    offset += s.extent
                else:
                    lo, hi = self.const(0, self.i64), self.const(s.extent, self.i64)
                if pipelined(s):
                    emit_pipelined(self, s, lo, hi)
                else:
                    self.loop(s, lo, hi)
            elif isinstance(s, K.Store):
                v = self.value(s.value)
                if s.buffer.dtype is DType.bool:
                    v = b.zext(v, ir_type(DType.bool, storage=True))
                b.store(v, self.addr(s.buffer, s.index))
            elif isinstance(s, K.DefAcc):
                with b.goto_block(self.entry):  # allocas in the entry block (mem2reg promotes)
                    b.position_at_start(self.entry)
                    p = b.alloca(ir_type(s.dtype), name=s.name)
                b.store(self.const(s.init, ir_type(s.dtype)), p)
                self.vals[s.name] = p
            elif isinstance(s, K.Accumulate):
                p = self.vals[s.name]
                acc, x = b.load(p), self.value(s.value)
                kind = _kind(s.value.dtype)
                if kind == "float":  # lanes the vectoriser may reorder: see _reduce_float
                    b.store(self._reduce_float(s.op, acc, x), p)
                else:
                    b.store(BINARY[("add" if s.op == "sum" else "maximum", kind)](self, acc, x), p)
            elif isinstance(s, K.Let):
                self.vals[s.name] = self.value(s.value)
            else:
                raise BackendError(f"not a statement: {s!r}", stage="codegen (llvm)")

    def loop(self, s: K.Loop, lo, hi, emit=None):
        """for s.var in lo..hi: emit(i) (default: the row prefetches, then s.body), with
        the loop metadata `s` asks for (llvm_loops.py)."""
        b = self.b
        pre = b.block
        cond = self.fn.append_basic_block(f"{s.var}.cond")
        loop = self.fn.append_basic_block(f"{s.var}.body")
        done = self.fn.append_basic_block(f"{s.var}.end")
        b.branch(cond)
        b.position_at_end(cond)
        i = b.phi(self.i64, s.var)
        i.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", i, hi), loop, done)
        b.position_at_end(loop)
        self.vars[s.var] = i
        if emit is None:
            for row in prefetch_rows(s):
                emit_prefetch(self, i, s.extent, *row)
            self.stmts(s.body)
        else:
            emit(i)
        i.add_incoming(b.add(i, self.const(1, self.i64), flags=("nsw",)), b.block)
        latch = b.branch(cond)
        if register_row(s):  # a row accumulated over the enclosing loop (llvm_loops.py)
            latch.set_metadata("llvm.loop", row_loop_id(self.module))
        elif interleaved(s):
            latch.set_metadata("llvm.loop", interleave_loop_id(self.module))
        b.position_at_end(done)

    def _reduce_float(self, op: str, acc, x):
        """One step of a float reduction, written so that LLVM's loop vectoriser can keep
        several partial results in vector lanes: a sum's fadd carries `reassoc` (only that
        add: fast-math stays off elsewhere), a max is `llvm.maximum` (NaN-propagating like
        numpy, and exactly associative). Without them the reduction loop stays scalar and
        so does all the math in it: softmax's sum(exp(x - max)) ran 8x slower. The order
        of a sum then differs from a sequential loop, as numpy's pairwise sum does."""
        if op == "sum":
            return self.b.fadd(acc, x, flags=tuple(dict.fromkeys(self.fm + ("reassoc",))))
        ty = acc.type
        f = self.module.declare_intrinsic("llvm.maximum", [ty], self.ir.FunctionType(ty, [ty, ty]))
        return self.b.call(f, [acc, x])

    # ---- expressions ----
    def index(self, e):
        b, i64 = self.b, self.i64
        if isinstance(e, K.Const):
            return self.const(int(e.value), i64)
        if isinstance(e, K.Var):
            return self.vars[e.name]
        x, y = self.index(e.a), self.index(e.b)
        if isinstance(e, K.Add):
            return b.add(x, y, flags=("nsw",))
        if isinstance(e, K.Mul):
            return b.mul(x, y, flags=("nsw",))
        if isinstance(e, K.FloorDiv):
            return b.udiv(x, y)  # indices are never negative
        if isinstance(e, K.Mod):
            return b.urem(x, y)
        if isinstance(e, K.Min):
            return b.select(b.icmp_signed("<", x, y), x, y)
        return b.select(b.icmp_signed(">", x, y), x, y)

    def addr(self, buf: K.Buffer, e):
        p = self.ptr[buf.name]
        if buf.role == "const":
            return self.b.gep(p, [self.const(0, self.i64), self.index(e)], inbounds=True)
        return self.b.gep(p, [self.index(e)], inbounds=True)

    def value(self, v):
        b = self.b
        if isinstance(v, K.Load):
            x = b.load(self.addr(v.buffer, v.index))
            return b.icmp_unsigned("!=", x, self.const(0, x.type)) if v.dtype is DType.bool else x
        if isinstance(v, K.Lit):
            t = ir_type(v.dtype)
            return self.const(float(v.value) if v.dtype.is_float else int(v.value), t)
        if isinstance(v, K.Unary):
            rule = UNARY.get((v.op, _kind(v.dtype)))
            if rule is None:
                raise NoRuleError(f"no LLVM rule for {v.op} on {v.dtype.name}",
                                  stage="codegen (llvm)",
                                  hint="add it to UNARY in backends/llvm_codegen.py")
            return rule(self, self.value(v.x))
        if isinstance(v, K.Binary):
            rule = BINARY.get((v.op, _kind(v.a.dtype)))
            if rule is None:
                raise NoRuleError(f"no LLVM rule for {v.op} on {v.a.dtype.name}",
                                  stage="codegen (llvm)",
                                  hint="add it to BINARY in backends/llvm_codegen.py")
            return rule(self, self.value(v.a), self.value(v.b))
        if isinstance(v, K.Select):
            return b.select(self.value(v.cond), self.value(v.a), self.value(v.b))
        if isinstance(v, K.CastE):
            return _cast(self, self.value(v.x), v.x.dtype, v.dtype)
        if isinstance(v, K.RandE):
            return self.rand(v)
        if isinstance(v, K.InBounds):
            ok = self.const(1, self.ir.IntType(1))
            for e, lo, hi in v.checks:
                x = self.index(e)
                ok = b.and_(ok, b.icmp_signed(">=", x, self.const(lo, self.i64)))
                ok = b.and_(ok, b.icmp_signed("<", x, self.const(hi, self.i64)))
            return ok
        if isinstance(v, K.AccRef):
            return b.load(self.vals[v.name])
        if isinstance(v, K.Ref):
            return self.vals[v.name]
        raise BackendError(f"not a value: {v!r}", stage="codegen (llvm)")

    def rand(self, v: K.RandE):
        """graphc.ops.rand_bits, in i32 arithmetic (wrapping, as numpy's uint32)."""
        b, i32 = self.b, self.ir.IntType(32)
        c = lambda x: self.const(x, i32)  # noqa: E731

        def fmix(h):
            h = b.xor(h, b.lshr(h, c(16)))
            h = b.mul(h, c(0x85EBCA6B))
            h = b.xor(h, b.lshr(h, c(13)))
            h = b.mul(h, c(0xC2B2AE35))
            return b.xor(h, b.lshr(h, c(16)))
        key = self.value(v.key)
        if key.type.width < 64:
            key = b.sext(key, self.i64)
        lo, hi = b.trunc(key, i32), b.trunc(b.lshr(key, self.const(32, self.i64)), i32)
        seed = fmix(b.xor(fmix(b.add(hi, c(0x9E3779B9))), lo))
        bits = fmix(b.add(fmix(b.xor(b.trunc(self.index(v.index), i32), seed)), c(0x6A09E667)))
        t = ir_type(v.dtype)
        return b.fmul(b.uitofp(b.lshr(bits, c(8)), t), self.const(2.0 ** -24, t))


def build_module(kernels: list[K.Kernel], name: str = "graphc", fast_math: bool = False,
                 noalias: frozenset = frozenset()):
    """One llvmlite ir.Module with a function per kernel; the kernels named in `noalias`
    get `noalias` pointer arguments (their output shares no memory with their inputs)."""
    from graphc.backends.llvm import new_module
    module = new_module(name)
    for k in kernels:
        _Codegen(module, k, fast_math, k.name in noalias).build()
    return module
