"""Hexagon: every kernel the rule can take is vectorized by one 128-byte HVX register
(32 fp32 / 64 fp16 lanes), so the LLVM Hexagon backend emits HVX (`vmem`, `vmpy`) for it; row
reductions (LayerNorm, softmax) in lanes of partial sums."""

from tvm_conformer.compiler.matmul_tile import HVX_BITS  # LLVM reports 128 bits, the scalar width
from tvm_conformer.compiler.vectorize import RowReduction, VectorizeInnermost

# row reductions in at least half an HVX register of fp32, as VectorizeInnermost prefers
RULES = [VectorizeInnermost(vector_bits=HVX_BITS), RowReduction(vector_bits=HVX_BITS, min_lanes=16, odd_lanes=False)]
