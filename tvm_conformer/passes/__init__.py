"""Relax passes of tvm-conformer, one per file."""

from __future__ import annotations

import tvm

from tvm_conformer.errors import UserError


def by_name(name: str) -> tvm.transform.Pass:
    """The graph pass called `name` in `tvm_conformer.compiler.pipeline.GRAPH_PASSES`:
    "layout" (ChannelsFirstLayout), "einsum" (ChunkedEinsumAttention), "fuse" (FoldBatchNorm
    then FuseConformerOps)."""
    from tvm_conformer.passes.channels_first_layout import ChannelsFirstLayout
    from tvm_conformer.passes.chunked_einsum_attention import ChunkedEinsumAttention
    from tvm_conformer.passes.fold_batch_norm import FoldBatchNorm
    from tvm_conformer.passes.fuse_conformer_ops import FuseConformerOps

    if name == "layout":
        return ChannelsFirstLayout()
    if name == "einsum":
        return ChunkedEinsumAttention()
    if name == "fuse":
        return tvm.transform.Sequential([FoldBatchNorm(), FuseConformerOps()], name="Fuse")
    raise UserError(f"unknown graph pass {name!r}: choose from layout, einsum, fuse")


def fp16_passes(numerics: bool = True) -> list[tvm.transform.Pass]:
    """fp32 -> fp16 with (numerics=True) the MAD pre-normalized LayerNorm and the conditional
    softmax rescaling, or (numerics=False) plain fp16, the build whose failure they fix.

    Accumulation is fp16 everywhere, by choice: matmul and conv accumulate in fp16 (out_dtype
    float16), and so do the sums of LayerNorm, softmax and log_softmax; only the step's inputs and
    outputs are fp32, cast at the boundary. That is what fp16 SIMD units compute without widening,
    and the worst case for range, which the numerics passes are proven (their docstrings) and
    measured (`tvm-conformer study-fp16`) to survive; it costs precision only: on the shipped model
    the fp16 log-probs stay within 0.25 of fp32 at audio gains from -40 to +100 dB, the WER within
    0.3 points. Plain fp16 computes LayerNorm as mean/variance: once a row's squared deviations sum
    past 65504 the variance is inf, the normalized row 0, and LayerNorm returns beta, so its
    failure is finite garbage (between +30 and +40 dB of gain on the shipped model), not NaN.
    """
    from tvm_conformer.passes.pre_normalize_layer_norm import PreNormalizeLayerNorm
    from tvm_conformer.passes.rescale_softmax import RescaleSoftmax
    from tvm_conformer.passes.to_fp16 import to_fp16

    @tvm.transform.module_pass(opt_level=0, name="ToFp16")
    def _to_fp16(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return to_fp16(mod)

    if not numerics:
        return [_to_fp16]
    return [PreNormalizeLayerNorm("float16"), _to_fp16, RescaleSoftmax()]
