"""ChunkedEinsumAttention: per-head einsums over slices of the projections and of the K/V cache."""

from __future__ import annotations

import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_conformer.passes.chunked_einsum_attention import ChunkedEinsumAttention


def test_multi_head_attention_becomes_per_head_einsums() -> None:
    # the torch frontend's spelling: heads split by reshape + permute_dims, K transposed,
    # batch and heads merged for a 3-D matmul, a scale and the chunk mask before the softmax
    @I.ir_module
    class Before:
        @R.function
        def main(
            q: R.Tensor((1, 2, 4), "float32"),
            kv: R.Tensor((1, 2, 3, 4), "float32"),
            mask: R.Tensor((1, 1, 1, 3), "bool"),
        ) -> R.Tensor((1, 2, 4), "float32"):
            with R.dataflow():
                qh = R.permute_dims(R.reshape(q, R.shape([1, 2, 2, 2])), axes=[0, 2, 1, 3])
                k = R.take(kv, R.const(0, "int64"), axis=1)
                kh = R.permute_dims(R.reshape(k, R.shape([1, 3, 2, 2])), axes=[0, 2, 1, 3])
                kt = R.permute_dims(kh, axes=[0, 1, 3, 2])
                v = R.take(kv, R.const(1, "int64"), axis=1)
                vh = R.permute_dims(R.reshape(v, R.shape([1, 3, 2, 2])), axes=[0, 2, 1, 3])
                s = R.matmul(R.reshape(qh, R.shape([2, 2, 2])), R.reshape(kt, R.shape([2, 2, 3])))
                s = R.divide(R.reshape(s, R.shape([1, 2, 2, 3])), R.const(2.0, "float32"))
                s = R.where(mask, R.const(-10000.0, "float32"), s)
                p = R.reshape(R.nn.softmax(s, axis=-1), R.shape([2, 2, 3]))
                o = R.matmul(p, R.reshape(vh, R.shape([2, 3, 2])))
                o = R.permute_dims(R.reshape(o, R.shape([1, 2, 2, 2])), axes=[0, 2, 1, 3])
                out = R.reshape(o, R.shape([1, 2, 4]))
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(
            q: R.Tensor((1, 2, 4), "float32"),
            kv: R.Tensor((1, 2, 3, 4), "float32"),
            mask: R.Tensor((1, 1, 1, 3), "bool"),
        ) -> R.Tensor((1, 2, 4), "float32"):
            with R.dataflow():
                # head 0: channels 0:2 of q, of the keys (kv[:, 0]) and of the values (kv[:, 1])
                q0 = R.strided_slice(q, axes=[2], begin=[0], end=[2])
                k0 = R.strided_slice(kv, axes=[1, 3], begin=[0, 0], end=[1, 2])
                s0 = R.reshape(R.einsum((q0, k0), "itd,uvsd->ts"), R.shape([1, 1, 2, 3]))
                s0 = R.divide(s0, R.const(2.0, "float32"))
                s0 = R.where(mask, R.const(-10000.0, "float32"), s0)
                p0 = R.nn.softmax(s0, axis=-1)
                v0 = R.strided_slice(kv, axes=[1, 3], begin=[1, 0], end=[2, 2])
                o0 = R.reshape(R.einsum((p0, v0), "ijts,uvsd->td"), R.shape([1, 2, 2]))
                # head 1: channels 2:4
                q1 = R.strided_slice(q, axes=[2], begin=[2], end=[4])
                k1 = R.strided_slice(kv, axes=[1, 3], begin=[0, 2], end=[1, 4])
                s1 = R.reshape(R.einsum((q1, k1), "itd,uvsd->ts"), R.shape([1, 1, 2, 3]))
                s1 = R.divide(s1, R.const(2.0, "float32"))
                s1 = R.where(mask, R.const(-10000.0, "float32"), s1)
                p1 = R.nn.softmax(s1, axis=-1)
                v1 = R.strided_slice(kv, axes=[1, 3], begin=[1, 2], end=[2, 4])
                o1 = R.reshape(R.einsum((p1, v1), "ijts,uvsd->td"), R.shape([1, 2, 2]))
                out = R.concat((o0, o1), axis=2)  # the heads merged along the channels
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(ChunkedEinsumAttention()(Before), Expected)


def test_softmax_of_a_plain_batched_matmul_is_unchanged() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(
            a: R.Tensor((2, 3, 4), "float32"),
            b: R.Tensor((2, 4, 5), "float32"),
            c: R.Tensor((2, 5, 6), "float32"),
        ) -> R.Tensor((2, 3, 6), "float32"):
            with R.dataflow():
                p = R.nn.softmax(R.matmul(a, b), axis=-1)
                out = R.matmul(p, c)
                R.output(out)
            return out

    Expected = Before
    tvm.ir.assert_structural_equal(ChunkedEinsumAttention()(Before), Expected)
