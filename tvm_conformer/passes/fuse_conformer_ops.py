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


def _linear(x: DFPattern) -> DFPattern:
    """A pointwise channel mix of x: a 1x1 conv2d, or an imported linear with its weight
    transpose (which then costs index arithmetic instead of a kernel)."""
    weight = _op("permute_dims", wildcard())
    return (
        _op("nn.conv2d", x, wildcard())
        | _op("matmul", x, weight)
        | _op("matmul", _op("broadcast_to", _op("permute_dims", x), wildcard()),
              _op("broadcast_to", weight, wildcard()))
    )


def _epilogue(x: DFPattern, steps: tuple[str, ...]) -> DFPattern:
    """x followed by elementwise `steps`, each with a second operand (the chain's own first)."""
    for step in steps:
        x = _op("multiply", x, _op("sigmoid", x)) if step == "swish" else _op(step, x, wildcard())
    return x


def _glu() -> DFPattern:
    """linear (+ bias) [reshape] -> a * sigmoid(b) over its two halves [transpose] -> concat after
    the cache: GLU needs each frame's whole channel vector, which the linear has just made."""
    y = _add(_linear(wildcard()), wildcard())
    y = y | _op("reshape", y, wildcard())
    half_a = is_op("relax.strided_slice")(y, varg_default_wildcard=True)
    half_b = is_op("relax.strided_slice")(y, varg_default_wildcard=True)
    glu = _op("multiply", half_a, _op("sigmoid", half_b))
    glu = glu | _op("permute_dims", glu)
    return _op("concat", is_tuple([wildcard(), glu | _op("reshape", glu, wildcard())]))


# the elementwise ops between a depthwise conv and its pointwise conv: the bias, then
# BatchNorm as DecomposeOpsForInference writes it (or folded by FoldBatchNorm) and Swish
_DEPTHWISE_EPILOGUES = (
    ("add", "subtract", "divide", "multiply", "add", "swish"),
    ("add", "swish"),
    ("add",),
)


def _separable(steps: tuple[str, ...], residual: bool) -> DFPattern:
    """depthwise conv -> epilogue -> pointwise conv (+ bias) [-> ReLU | + residual]: the
    pointwise conv reads each frame's channel vector right after the depthwise conv wrote it."""
    kernel = _op("reshape", wildcard(), wildcard()) | wildcard()
    depthwise = _op("nn.conv1d", wildcard(), kernel) | _op("nn.conv2d", wildcard(), kernel)
    out = _add(_linear(_epilogue(depthwise, steps)), wildcard())
    return _add(out, wildcard()) if residual else _op("nn.relu", out)


def _head(chain: tuple[str, ...]) -> DFPattern:
    """One attention head of ChunkedEinsumAttention: slices, scores, chain, softmax, weighted
    sum; the (T, S) scores never leave the kernel."""

    def operand() -> DFPattern:
        return is_op("relax.strided_slice")(wildcard(), varg_default_wildcard=True) | wildcard()

    x = _op("reshape", _op("einsum", is_tuple([operand(), operand()])), wildcard())
    for step in chain:
        x = _op("where", wildcard(), wildcard(), x) if step == "where" else _op(step, x, wildcard())
    probs = _op("nn.softmax", x)
    return _op("reshape", _op("einsum", is_tuple([probs, operand()])), wildcard())


def conformer_patterns() -> list[FusionPattern]:
    """The fusion patterns, larger first (FuseOpsByPattern takes the first that matches)."""
    patterns = []
    for i, steps in enumerate(_DEPTHWISE_EPILOGUES):
        for residual in (True, False):
            patterns.append(FusionPattern(f"separable{i}{'_res' if residual else ''}",
                                          _separable(steps, residual)))
    patterns.append(FusionPattern("glu", _glu())) if False else None
    for i, chain in enumerate([("divide", "where"), ("multiply", "where"), ("divide",),
                               ("multiply",), ()]):
        patterns.append(FusionPattern(f"attention_head{i}", _head(chain)))
    return patterns


@tvm.transform.module_pass(opt_level=0, name="FuseConformerOps")
class FuseConformerOps:
    """Fuse across the boundaries FuseOps keeps (it never fuses two reductions, nor a
    producer into a convolution or matmul):

    - depthwise separable convolutions, the subsampling's (depthwise conv, bias, pointwise
      conv, bias, ReLU) and the convolution module's (depthwise conv, bias, BatchNorm, Swish,
      pointwise conv, bias, residual add): one kernel each;
    - the convolution module's first pointwise conv with its GLU, the transpose and the
      concatenation after the cache: one kernel;
    - each attention head made by ChunkedEinsumAttention (slices, two einsums, scale, mask,
      softmax): one kernel.

    Each group becomes a Relax function marked Primitive (FuseOpsByPattern without codegen),
    which LegalizeOps lowers and FuseTIR merges into one PrimFunc; FuseOps still fuses the
    rest. Data dependencies bound the groups: the new convolution cache is a slice of the
    concatenation, a second output, so the depthwise conv cannot join the GLU's kernel.
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Group the matches in every function of `mod`."""
        patterns = conformer_patterns()
        return relax.transform.FuseOpsByPattern(patterns, bind_constants=False)(mod)
