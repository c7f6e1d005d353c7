"""Every table keyed by Op covers Op exactly: the op declarations, the VJP table and the
numpy backend's lowering table. A new primitive that is missing a rule fails here first."""
import graphc.backends.numpy as numpy_backend
from graphc.ops import (ARITH, BINARY, COMPARE, ELEMENTWISE, LEAF, MOVEMENT, OPS, REDUCE,
                        UNARY, Op, OpDef)
from graphc.passes.autodiff import NOT_DIFFERENTIATED, VJP


def test_ops_declares_every_op():
    assert set(OPS) == set(Op)
    for op, d in OPS.items():
        assert isinstance(d, OpDef)
        assert d.op is op, f"OPS[{op}] declares {d.op}"


def test_every_computing_op_has_a_numpy_reference():
    missing = [op for op, d in OPS.items() if d.reference is None and op is not Op.INPUT]
    assert missing == []


def test_declared_arity_matches_op_class():
    for op in UNARY:
        assert OPS[op].arity == 1, op
    for op in BINARY:
        assert OPS[op].arity == 2, op
    for op in REDUCE:
        assert OPS[op].arity == 1, op
    assert OPS[Op.WHERE].arity == 3
    assert OPS[Op.CONCAT].arity == -1
    assert OPS[Op.MATMUL].arity == 2
    for op in LEAF:
        assert OPS[op].arity == 0


def test_op_classes_are_disjoint_subsets():
    assert ARITH.isdisjoint(COMPARE)
    assert UNARY.isdisjoint(BINARY)
    assert ELEMENTWISE.isdisjoint(REDUCE | MOVEMENT | LEAF)
    assert REDUCE.isdisjoint(MOVEMENT)
    assert (ELEMENTWISE | REDUCE | MOVEMENT | LEAF) <= set(Op)


def test_vjp_table_and_not_differentiated_cover_op_exactly():
    keys = set(VJP)
    assert keys.isdisjoint(NOT_DIFFERENTIATED), keys & set(NOT_DIFFERENTIATED)
    assert keys | set(NOT_DIFFERENTIATED) == set(Op), set(Op) - keys - set(NOT_DIFFERENTIATED)
    # only leaves, the grad marker and fused kernels (made after the backward stage) are exempt
    assert {Op.INPUT, Op.CONST, Op.GRAD} <= set(NOT_DIFFERENTIATED) <= {Op.INPUT, Op.CONST,
                                                                         Op.GRAD, Op.FUSED}


def test_vjp_rules_are_callable():
    assert all(callable(r) for r in VJP.values())


def test_numpy_lowering_and_not_lowered_cover_op_exactly():
    keys = set(numpy_backend.LOWER)
    assert keys.isdisjoint(numpy_backend.NOT_LOWERED), keys & numpy_backend.NOT_LOWERED
    assert keys | numpy_backend.NOT_LOWERED == set(Op)
    # leaves and fused kernels are rendered by the backend's loop; grad never reaches it
    assert {Op.INPUT, Op.CONST, Op.GRAD} <= numpy_backend.NOT_LOWERED <= {Op.INPUT, Op.CONST,
                                                                           Op.GRAD, Op.FUSED}
    assert all(callable(r) for r in numpy_backend.LOWER.values())


def test_no_table_has_keys_that_are_not_ops():
    for table in (OPS, VJP, numpy_backend.LOWER):
        assert all(isinstance(k, Op) for k in table), [k for k in table if not isinstance(k, Op)]
