"""Relax passes of tvm-conformer, one per file."""

from __future__ import annotations

import tvm

from tvm_conformer.errors import UserError


def by_name(name: str) -> tvm.transform.Pass:
    """The graph pass called `name` in `tvm_conformer.build.pipeline.GRAPH_PASSES`:
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
    softmax rescaling, or (numerics=False) plain fp16, the build whose failure they fix."""
    from tvm_conformer.passes.pre_normalize_layer_norm import PreNormalizeLayerNorm
    from tvm_conformer.passes.rescale_softmax import RescaleSoftmax
    from tvm_conformer.passes.to_fp16 import to_fp16

    @tvm.transform.module_pass(opt_level=0, name="ToFp16")
    def _to_fp16(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return to_fp16(mod)

    if not numerics:
        return [_to_fp16]
    return [PreNormalizeLayerNorm("float16"), _to_fp16, RescaleSoftmax()]
