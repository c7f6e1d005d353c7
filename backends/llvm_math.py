"""float32 exp, log and tanh written in LLVM IR (no libm call), so loops that use them
vectorise (the loop vectoriser turns them into <8 x float> code on AVX2; a call to expf /
tanhf, or llvm.exp without a vector library, keeps a loop scalar).

    exp   n = rint(x/ln2) (from the bits of fma(x, 1/ln2, 1.5*2^23)), r = x - n*ln2
          (Cody-Waite, two fma), r + r^2 P(r) with P of degree 4 on |r| <= ln2/2 (fitted
          here, see EXP_P), times 2^n built from the exponent bits in two halves (so
          subnormal results and overflow to inf come out right)
    log   x = m * 2^e with m in [sqrt(1/2), sqrt(2)) from the bits (subnormals scaled by 2^23
          first), f = m - 1, log(1+f) = f - f^2/2 + f^3 P(f) (Cephes logf, degree 8),
          plus e*ln2 split in two
    tanh  sign(x) E/(E + 2) with E = expm1(2|x|) = 2^n p + (2^n - 1), where p = expm1(r) is
          exp's polynomial before its + 1 and n, r come from exp's reduction (ln2 in one
          part: see `_expm1_parts`; |x| clamped at 10, where tanh is 1.0f); one formula over
          the whole range, no small-|x| branch

Special values follow numpy: exp(nan)=nan, exp(+-inf)=inf/0, log(x<0)=nan, log(0)=-inf,
log(inf)=inf, tanh(+-inf)=+-1, tanh(-0)=-0. Every fma is the `llvm.fma` intrinsic, exact and
IEEE (no fast-math flags are needed; vfmadd on x86). float64 keeps the LLVM intrinsics /
libm (exact to libm, not vectorised).

Max error in ulp against the correctly rounded result (numpy's float64 function rounded to
float32) and against numpy's float32 functions (themselves up to exp 2, log 3, tanh 1 ulp
off), over every float32 where the function is not constant: exp on [-104, 89], log on
every positive float, tanh on [0, 10] (odd, and 1.0 above). The tests sweep random bit
patterns, grids, specials and the worst points below (tests/backends/test_llvm_math.py).

          correctly rounded                   numpy
    exp   1                                   3 (199 floats over 2)
    log   1                                   4 (4825 over 2, worst near x = 0.78)
    tanh  3 (79 floats over 2, 0.07% over 1)  3 (5373 over 2)

tanh's 3 ulp are at small |x| (0.0304, 0.059), where E = expm1(2|x|) is its polynomial
and E + 2 is rounded before the division: up to an ulp of the result where it sits at the
top of its binade, beside the polynomial's and the division's rounding. (Sessions before
2026-11-24 measured a grid of 8M points and claimed 2; every float shows the 3.) The
two-branch tanh it replaced (a small-|x| polynomial beside 1 - 2/(exp(2|x|) + 1)) took
1.37x the time. A rational tanh, x P(x^2)/Q(x^2) of degree 5/4 fitted on [0, 9.1] (no exp
reduction: 15 operations, shorter dependent chain), took W4's chain from 2.42 to 2.12 ms,
but was 5 ulp off: near tanh = 1 each rounding in P and Q costs up to an ulp of the
result, so it was not taken.
Speed, each change against the code before it (old and new compiled into one process,
timed interleaved, medians), 4M float32 on 2 cores: tanh 1.82 ms (two-branch 2.50), tanh(0.5x + 1) 1.93 (2.78), W4's chain 3.53
(4.08), exp 1.61, 1/(1 + exp(-x)) 1.83. Polynomials evaluated in pairs then Horner in x^2
(`_poly`) against plain Horner, 256K floats on one core: log 0.93x, W4's chain 0.97x, exp
and tanh unchanged. Taking n from the bits of fma(x, 1/ln2, 1.5*2^23) instead of rint +
fptosi and no NaN select had taken W4's chain from 2.01 to 1.62 ns an element (4M floats,
2 threads). Degree 4 for P instead of Cephes expf's 5 (the same 1 ulp from the correctly
rounded exp; against numpy 3 ulp where it was 2), fma(p, 2^n1, 2^n1) for (p + 1) 2^n1 and
tanh's reduction without 2|x| (`_expm1_parts`), 256K floats on one core: exp 0.85x, tanh
0.94x, W4's chain 0.92x.
"""
from __future__ import annotations

LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4
# P in expm1(r) = r + r^2 P(r), highest power first: fitted for the least maximum error
# relative to exp(r) on |r| <= ln2/2 (weighted least squares, reweighted by the error until
# it levels out: Lawson's iteration towards minimax), then rounded to float32 one
# coefficient at a time from the constant term up, the rest refitted after each: max
# error 0.05 * 2^-24 of exp(r) before the arithmetic's own rounding
EXP_P = (0.0013821172760799527, 0.008368666283786297, 0.04166825860738754, 0.1666652113199234,
         0.4999999403953552)
LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
         1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
         3.3333331174e-1)
SHIFTER, SHIFTER_BITS = 12582912.0, 0x4B400000  # 1.5 * 2^23 and its bits


def _f(g, v):
    return g.ir.Constant(g.ir.FloatType(), float(v))


def _i(g, v):
    return g.ir.Constant(g.ir.IntType(32), int(v))


def _fma(g, a, b, c):
    t = a.type
    f = g.module.declare_intrinsic("llvm.fma", [t], g.ir.FunctionType(t, [t, t, t]))
    return g.b.call(f, [a, b, c])


def _poly(g, x, x2, coeffs):
    """The polynomial with `coeffs` (highest power first) at x, given x2 = x*x: with c_k
    the coefficient of x^k, pairs c_2j + c_2j+1 x (independent fmas), then Horner in x2. As
    many fmas as Horner in x, fewer of them dependent (exp's 5 coefficients: 3 instead of 4,
    log's 9: 5 instead of 8), and the dependent chain is what bounds these loops (an fma's
    latency is 4 cycles, and the CPU overlaps only a few loop iterations)."""
    lo = [_f(g, c) for c in coeffs[::-1]]
    pairs = [_fma(g, lo[k + 1], x, lo[k]) if k + 1 < len(lo) else lo[k]
             for k in range(0, len(lo), 2)]
    acc = pairs[-1]
    for c in pairs[-2::-1]:
        acc = _fma(g, acc, x2, c)
    return acc


def _sel(g, cond, a, b):
    return g.b.select(cond, a, b)


def _pow2i(g, n):
    """2^n as a float for an i32 n in [-126, 127]."""
    b = g.b
    return b.bitcast(b.shl(b.add(n, _i(g, 127)), _i(g, 23)), g.ir.FloatType())


def exp_f32(g, x):
    """x clamped to [-104, 89] (ordered compares: a NaN fails both and goes on as itself,
    through the fmas), then 2^n (expm1(r) + 1) with 2^n applied in two halves, so subnormal
    results and overflow to inf come out right: fma(p, 2^n1, 2^n1) rounds (p + 1) 2^n1
    once, as p + 1 would (2^n1 is a normal power of two), an add fewer."""
    b = g.b
    xc = _sel(g, b.fcmp_ordered(">", x, _f(g, 89.0)), _f(g, 89.0), x)
    xc = _sel(g, b.fcmp_ordered("<", xc, _f(g, -104.0)), _f(g, -104.0), xc)
    p, t = _expm1_parts(g, xc)
    ni = b.sub(b.bitcast(t, g.ir.IntType(32)), _i(g, SHIFTER_BITS))  # n, in [-150, 128]
    n1 = b.ashr(ni, _i(g, 1))
    s1 = _pow2i(g, n1)
    return b.fmul(_fma(g, p, s1, s1), _pow2i(g, b.sub(ni, n1)))


def _expm1_parts(g, x, scale: int = 1):
    """(expm1(r), t) for the argument y = scale * x, y = n ln2 + r, |r| <= ln2/2, so that
    exp(y) = 2^n (expm1(r) + 1); t = y/ln2 + SHIFTER carries n in its low mantissa bits
    (the add rounds to an integer, ties to even): one fma where rint and fptosi took two
    instructions, and no fptosi of a NaN (poison in LLVM, which made a select necessary).
    expm1(r) = r + r^2 P(r) keeps its relative accuracy as r goes to 0 (tanh needs that).

    scale=2 (tanh's expm1(2|x|)) never forms 2x: s = x - n ln2/2 is r/2 exactly (scaling
    by 2 commutes with rounding), and r + r^2 P(r) = 2s + s^2 Q(s) with Q's coefficients
    P's times 2^(k+2) (k the power): the same value bit for bit, with 2s computed beside the
    polynomial instead of an add at the head of the dependent chain.

    exp (scale=1) subtracts n ln2 in two parts (Cody-Waite): |n| reaches 150, and ln2
    rounded to float32 is 1.9e-9 off, which would put up to 5 ulp into r. tanh (scale=2)
    subtracts it in one fma: n <= 29, and an error d in 2|x| moves tanh by d (1 - tanh^2),
    under 0.02 ulp of it for every n; every float on [0, 10] keeps its ulp (module doc),
    and the dependent chain is an fma shorter (tanh(0.5x + 1) 0.95-0.97x the time in
    cache, two runs)."""
    b = g.b
    t = _fma(g, x, _f(g, scale * 1.44269504088896341), _f(g, SHIFTER))
    n = b.fsub(t, _f(g, SHIFTER))
    if scale == 1:
        s = _fma(g, n, _f(g, -0.693145751953125), x)  # ln2 split: 0.693145751953125 exact
        s = _fma(g, n, _f(g, -1.428606765330187045e-06), s)
    else:
        s = _fma(g, n, _f(g, -0.6931471805599453 / scale), x)
    s2 = b.fmul(s, s)
    q = [c * scale ** (k + 2) for k, c in zip(range(len(EXP_P) - 1, -1, -1), EXP_P)]
    return _fma(g, _poly(g, s, s2, q), s2, s if scale == 1 else b.fmul(s, _f(g, scale))), t


def log_f32(g, x):
    b, i32, f32 = g.b, g.ir.IntType(32), g.ir.FloatType()
    tiny = b.fcmp_ordered("<", x, _f(g, 1.1754943508222875e-38))
    xs = _sel(g, tiny, b.fmul(x, _f(g, 8388608.0)), x)       # subnormals: scale by 2^23
    bits = b.bitcast(xs, i32)
    e = b.sub(b.lshr(bits, _i(g, 23)), _i(g, 127))
    e = b.sub(e, _sel(g, tiny, _i(g, 23), _i(g, 0)))
    m = b.bitcast(b.or_(b.and_(bits, _i(g, 0x7FFFFF)), _i(g, 0x3F800000)), f32)  # [1, 2)
    big = b.fcmp_ordered(">", m, _f(g, 1.41421356237309505))
    m = _sel(g, big, b.fmul(m, _f(g, 0.5)), m)
    e = b.add(e, b.zext(big, i32))
    ef = b.sitofp(e, f32)
    f = b.fsub(m, _f(g, 1.0))
    z = b.fmul(f, f)
    y = b.fmul(b.fmul(f, z), _poly(g, f, z, LOG_P))
    y = _fma(g, ef, _f(g, LN2_LO), y)
    y = _fma(g, z, _f(g, -0.5), y)
    y = b.fadd(f, y)
    y = _fma(g, ef, _f(g, LN2_HI), y)
    # specials: nan -> nan, x < 0 -> nan, 0 -> -inf, inf -> inf
    y = _sel(g, b.fcmp_ordered("==", x, _f(g, float("inf"))), x, y)
    y = _sel(g, b.fcmp_ordered("==", x, _f(g, 0.0)), _f(g, float("-inf")), y)
    y = _sel(g, b.fcmp_ordered("<", x, _f(g, 0.0)), _f(g, float("nan")), y)
    return _sel(g, b.fcmp_unordered("uno", x, x), x, y)


def tanh_f32(g, x):
    """sign(x) E/(E + 2), E = expm1(2|x|): one formula for every |x| (a separate small-|x|
    polynomial cost a second polynomial and a select in every vector lane). E = 2^n p + (2^n
    - 1) is one fma: 2^n - 1 is exact for n <= 24 (|x| < 8.5; above, the result rounds to
    within an ulp of 1 either way), and for n = 0 (|x| < 0.17) E is p itself, accurate
    relative to x, so tanh(x) ~ x keeps its digits down to subnormal x."""
    b, t = g.b, x.type
    ax = b.call(g.module.declare_intrinsic("llvm.fabs", [t]), [x])
    axc = _sel(g, b.fcmp_ordered(">", ax, _f(g, 10.0)), _f(g, 10.0), ax)  # tanh(10) == 1.0f
    p, tn = _expm1_parts(g, axc, scale=2)
    # 2^n from tn's bits (SHIFTER_BITS + n): << 23 moves n into the exponent field and
    # shifts SHIFTER's bits out, a subtraction fewer than _pow2i (n is in [0, 29] here)
    two_n = b.bitcast(b.add(b.shl(b.bitcast(tn, g.ir.IntType(32)), _i(g, 23)),
                            _i(g, 127 << 23)), g.ir.FloatType())
    e = _fma(g, two_n, p, b.fsub(two_n, _f(g, 1.0)))
    y = b.fdiv(e, b.fadd(e, _f(g, 2.0)))
    copysign = g.module.declare_intrinsic("llvm.copysign", [t], g.ir.FunctionType(t, [t, t]))
    return b.call(copysign, [y, x])  # odd: tanh(-0) = -0; a NaN stays NaN through the fmas


F32 = {"exp": exp_f32, "log": log_f32, "tanh": tanh_f32}
