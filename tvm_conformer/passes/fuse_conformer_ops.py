"""Group the Conformer's producer-consumer chains that FuseOps leaves apart into single kernels."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_op, is_tuple, wildcard
from tvm.relax.transform import FusionPattern


def _op(name: str, *args: DFPattern) -> DFPattern:
    return is_op(f"relax.{name}")(*args)


def _add(x: DFPattern, y: DFPattern) -> DFPattern:
    """x + y in either operand order."""
    return _op("add", x, y) | _op("add", y, x)


def _pointwise(x: DFPattern) -> DFPattern:
    """A pointwise channel mix of x: a 1x1 conv2d (channels-first), or the imported linear on
    the transposed (B, C, T) output of a conv1d, with its weight transpose (both transposes
    then cost index arithmetic inside the kernel instead of kernels of their own)."""
    weight = _op("broadcast_to", _op("permute_dims", wildcard()), wildcard())
    frames = _op("broadcast_to", _op("permute_dims", x), wildcard())
    return _op("nn.conv2d", x, wildcard()) | _op("matmul", frames, weight)


def _epilogue(x: DFPattern, steps: tuple[str, ...]) -> DFPattern:
    """x followed by elementwise `steps`, each taking the chain as its first operand."""
    for step in steps:
        x = _op("multiply", x, _op("sigmoid", x)) if step == "swish" else _op(step, x, wildcard())
    return x


# between a depthwise conv and its pointwise conv: the bias, then BatchNorm as
# DecomposeOpsForInference writes it (or as FoldBatchNorm leaves it) and Swish; or the bias alone
_DEPTHWISE_EPILOGUES = (
    ("add", "subtract", "divide", "multiply", "add", "swish"),
    ("add", "swish"),
    ("add",),
)
_SCORE_CHAINS = (("divide", "where"), ("multiply", "where"), ("divide",), ("multiply",), ())


def _separable(steps: tuple[str, ...], residual: bool) -> DFPattern:
    """depthwise conv -> epilogue -> pointwise conv + bias -> (+ residual | ReLU)."""
    kernel = _op("reshape", wildcard(), wildcard()) | wildcard()
    depthwise = _op("nn.conv1d", wildcard(), kernel) | _op("nn.conv2d", wildcard(), kernel)
    out = _add(_pointwise(_epilogue(depthwise, steps)), wildcard())
    return _add(out, wildcard()) if residual else _op("nn.relu", out)


def _head(chain: tuple[str, ...]) -> DFPattern:
    """One head as ChunkedEinsumAttention writes it: slices, einsum, scale/mask, softmax, einsum."""

    def operand() -> DFPattern:
        return is_op("relax.strided_slice")(wildcard(), varg_default_wildcard=True) | wildcard()

    x = _op("reshape", _op("einsum", is_tuple([operand(), operand()])), wildcard())
    for step in chain:
        x = _op("where", wildcard(), wildcard(), x) if step == "where" else _op(step, x, wildcard())
    probs = _op("nn.softmax", x)
    return _op("reshape", _op("einsum", is_tuple([probs, operand()])), wildcard())


def conformer_patterns() -> list[FusionPattern]:
    """The fusion patterns, larger first (FuseOpsByPattern tries them in order)."""
    patterns = [
        FusionPattern(f"separable{'_residual' if res else ''}_{i}", _separable(steps, res))
        for i, steps in enumerate(_DEPTHWISE_EPILOGUES)
        for res in (True, False)
    ]
    for i, chain in enumerate(_SCORE_CHAINS):
        patterns.append(FusionPattern(f"attention_head_{i}", _head(chain)))
    return patterns


@tvm.transform.module_pass(opt_level=0, name="FuseConformerOps")
class FuseConformerOps:
    """Fuse across the boundaries FuseOps keeps (it fuses neither two reductions nor a producer
    into a convolution or matmul):

    - depthwise separable convolutions, the subsampling's (depthwise conv, bias, pointwise
      conv, bias, ReLU) and the convolution module's (depthwise conv, bias, BatchNorm, Swish,
      pointwise conv, bias, residual add), each one kernel: the pointwise conv reads each
      frame's channel vector right after the depthwise conv wrote it;
    - each attention head that ChunkedEinsumAttention writes (q/k/v slices, both einsums,
      scale, mask, softmax), one kernel: the (T, S) scores never leave it.

    Each group becomes a Relax function marked Primitive (FuseOpsByPattern without codegen),
    which LegalizeOps lowers and FuseTIR merges into one PrimFunc; FuseOps fuses the rest,
    including the GLU with the transpose and the cache concatenation after it. The data
    dependencies allow the convolution module's first pointwise conv and its GLU in one kernel
    too, but the project's CPU Matmul schedule rule fails on an epilogue that reads two
    channels of its tile (GLU's c and c + C), so that group is left out.
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Group the matches in every function of `mod`."""
        return relax.transform.FuseOpsByPattern(conformer_patterns(), bind_constants=False)(mod)
