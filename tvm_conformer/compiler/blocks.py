"""Facts about TIR blocks that the schedules (`schedules/`), the rules and the tuner's task
groups all ask: what a block reads, whether a convolution reads one input channel per output."""

from __future__ import annotations

import tvm_ffi
from tvm import s_tir, tirx

CONV_BLOCKS = ("conv1d", "conv2d")  # TOPI's convolution blocks have one of these in their name


def operands(block: s_tir.SBlock) -> list:
    """The regions (`tvm.ir.TensorRegion`) `block` reads besides what it writes."""
    out = [w.source for w in block.writes]
    return [r for r in block.reads if not any(r.source.same_as(o) for o in out)]


def reads_one_channel(block: s_tir.SBlock) -> bool:
    """A convolution block in which every output reads a single input channel (depthwise, or a
    single-channel input): no (non-unit) reduction iterator indexes the data's channel axis."""
    if not any(name in block.name_hint for name in CONV_BLOCKS):
        return False
    data = operands(block)
    if not data or len(data[0].region) < 3:
        return False
    reduce = {iv.var for iv in block.iter_vars
              if iv.iter_type == tirx.IterVar.CommReduce and int(iv.dom.extent) > 1}
    channel = data[0].region[1].min
    used: set = set()
    tvm_ffi.structural_walk(channel, (tirx.Var, used.add))
    return reduce.isdisjoint(used)
