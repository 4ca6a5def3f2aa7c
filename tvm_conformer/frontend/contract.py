"""Models people already have: the streaming-CTC ONNX contract of WeNet and sherpa-onnx.

The contract (what sherpa-onnx's `OnlineWenetCtcModel` feeds and reads, by position):

    inputs   x                   float32 [1, T, 80]   T = (chunk - 1) * subsampling + right_context + 1
             offset              int64   [1]          starts at required_cache_size, += chunk per call
             required_cache_size int64   [1]          chunk_size * left_chunks
             attn_cache          float32 [blocks, heads, cache, 2 * output_size / heads]
             conv_cache          float32 [blocks, 1, output_size, cnn_module_kernel - 1]
             attn_mask           bool    [1, 1, cache + chunk]  cache positions not filled yet: 0
    outputs  log_probs [1, chunk, vocab] (log-softmaxed), next attn_cache, next conv_cache
    metadata head, num_blocks, output_size, cnn_module_kernel, right_context,
             subsampling_factor, vocab_size (and usually model_type, chunk_size, left_chunks)
    tokens   tokens.txt, `symbol id` per line, a blank named <blank>, <eps> or <blk>
    features sherpa-onnx's (SHERPA_FEATURES); `fbank_snip_edges`, `fbank_low_freq`,
             `fbank_high_freq`, `fbank_dither` metadata (written by `tvm-conformer export`)
             override them, for models trained on other options

`read_contract` checks a file against it and reports every problem, one line each.
`import_contract` brings it into Relax with the weights as separate parameters (initializers
of any dtype pass through: int8 QDQ / MatMulInteger graphs import the same way): the dims the
file leaves dynamic are fixed from the contract, `required_cache_size` becomes the constant
sherpa-onnx always feeds, shape arithmetic folds to constants (onnxscript's optimizer), and `main(x, offset, attn_cache, conv_cache, attn_mask, *weights)`
returns the three outputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tvm_conformer.errors import UserError

REQUIRED_KEYS = ("head", "num_blocks", "output_size", "cnn_module_kernel", "right_context",
                 "subsampling_factor", "vocab_size")
INPUTS = ("x", "offset", "required_cache_size", "attn_cache", "conv_cache", "attn_mask")
OUTPUTS = ("log_probs", "next_attn_cache", "next_conv_cache")
MAIN_INPUTS = ("x", "offset", "attn_cache", "conv_cache", "attn_mask")  # rcs is bound
BLANKS = ("<blk>", "<eps>", "<blank>")  # sherpa-onnx's order of preference
N_MELS = 80
EXPORT_HINT = ("export it with sherpa-onnx's scripts/wenet/export-onnx-streaming.py "
               "(README: Bring your own model)")

# The features sherpa-onnx computes for a WeNet CTC model (sherpa-onnx/csrc/features.h defaults,
# normalize_samples false for wenet_ctc: samples in the int16 range).
SHERPA_FEATURES = {"sample_rate": 16000, "num_bins": N_MELS, "frame_length_ms": 25.0,
                   "frame_shift_ms": 10.0, "dither": 0.0, "snip_edges": False,
                   "low_freq": 20.0, "high_freq": -400.0, "window_type": "povey",
                   "preemph_coeff": 0.97, "remove_dc_offset": True, "sample_scale": 32768.0}
TAIL_PADDING_SECONDS = 0.66  # sherpa-onnx's examples append this much silence at the end


@dataclass(frozen=True)
class ContractSpec:
    """What a contract file says about itself: everything a build and the streaming loop need."""

    path: str
    sha256: str
    head: int
    num_blocks: int
    output_size: int
    cnn_module_kernel: int
    right_context: int
    subsampling_factor: int
    vocab_size: int
    chunk_size: int
    left_chunks: int
    tokens: tuple[str, ...]
    tokens_path: str
    blank_id: int
    metadata: dict = field(default_factory=dict)
    opset: int = 0
    features: dict = field(default_factory=lambda: dict(SHERPA_FEATURES))

    @property
    def cache(self) -> int:
        """required_cache_size: chunk_size * left_chunks."""
        return self.chunk_size * self.left_chunks

    @property
    def chunk_frames(self) -> int:
        """Fbank frames one call takes (67 for chunk 16, 4x, right context 6)."""
        return (self.chunk_size - 1) * self.subsampling_factor + self.right_context + 1

    @property
    def chunk_shift(self) -> int:
        """Fbank frames between the starts of consecutive calls."""
        return self.chunk_size * self.subsampling_factor

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_shift * self.features["frame_shift_ms"] / 1000.0

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        h, d = self.head, self.output_size
        return {"x": (1, self.chunk_frames, N_MELS), "offset": (1,), "required_cache_size": (1,),
                "attn_cache": (self.num_blocks, h, self.cache, 2 * d // h),
                "conv_cache": (self.num_blocks, 1, d, self.cnn_module_kernel - 1),
                "attn_mask": (1, 1, self.cache + self.chunk_size)}

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.input_shapes()
        return {"log_probs": (1, self.chunk_size, self.vocab_size),
                "next_attn_cache": s["attn_cache"], "next_conv_cache": s["conv_cache"]}

    def contract(self) -> dict:
        """What a manifest records (no tokens: they are listed beside it)."""
        d = asdict(self)
        d.pop("tokens")
        d["inputs"] = {k: list(v) for k, v in self.input_shapes().items()}
        d["outputs"] = {k: list(v) for k, v in self.output_shapes().items()}
        return d

    def hash(self) -> str:
        """The architecture as a build depends on it (shapes, not the weights or the path)."""
        keys = {k: v for k, v in asdict(self).items()
                if k not in ("path", "sha256", "tokens", "tokens_path", "metadata", "blank_id")}
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]

    def to_text(self, ids: list[int]) -> str:
        """sherpa-onnx's text: symbols joined, a leading `▁` as a space, stripped."""
        out = []
        for i in ids:
            s = self.tokens[i]
            out.append(" " + s[1:] if s.startswith("▁") else s)
        return "".join(out).strip()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_tokens(path: Path, problems: list[str]) -> tuple[list[str], int]:
    """tokens.txt as sherpa-onnx reads it: `symbol id` (a bare id is the symbol " ")."""
    by_id: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 1:
            parts = [" ", parts[0]]
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            problems.append(f"{path} line {n}: {line.strip()!r} is not `symbol id`")
            continue
        i = int(parts[1])
        if i in by_id:
            problems.append(f"{path} line {n}: id {i} is used twice ({by_id[i]!r}, {parts[0]!r})")
        by_id[i] = parts[0]
    ids = sorted(by_id)
    if ids and ids != list(range(len(ids))):
        problems.append(f"{path}: ids are not 0..{len(ids) - 1} (first gap at "
                        f"{next(i for i, j in enumerate(ids) if i != j)})")
    toks = [by_id[i] for i in ids]
    blank = next((toks.index(b) for b in BLANKS if b in toks), -1)
    if blank < 0:
        problems.append(f"{path}: no blank symbol (one of {', '.join(BLANKS)}); sherpa-onnx "
                        "needs one to decode CTC")
    return toks, blank


def _dims(value_info) -> list:  # noqa: ANN001 - onnx.ValueInfoProto
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _dtype(value_info) -> str:  # noqa: ANN001
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type).name


def graph_inputs(model) -> list:  # noqa: ANN001, ANN201 - onnx.ModelProto -> [ValueInfoProto]
    """The inputs a caller feeds (old exporters also list initializers as inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


# which dims of each input the contract lets a file leave dynamic (sherpa-onnx's exporter
# declares N, T and the cache length dynamic); the others must be written in the file
_MAY_BE_DYNAMIC = {"x": (0, 1), "offset": (), "required_cache_size": (),
                   "attn_cache": (2,), "conv_cache": (1,), "attn_mask": (0, 2)}
_DTYPES = {"x": "float32", "offset": "int64", "required_cache_size": "int64",
           "attn_cache": "float32", "conv_cache": "float32", "attn_mask": "bool"}
_WHAT = {"x": "[1, T, 80] fbank frames", "offset": "[1]", "required_cache_size": "[1]",
         "attn_cache": "[num_blocks, head, cache, 2*output_size/head]",
         "conv_cache": "[num_blocks, 1, output_size, cnn_module_kernel-1]",
         "attn_mask": "[1, 1, cache+chunk]"}


def read_contract(
    path: str | Path, tokens: str | Path | None = None, chunk_size: int | None = None,
    left_chunks: int | None = None,
) -> ContractSpec:
    """Checks `path` (and its tokens.txt: `tokens` or beside the model) against the contract.
    Raises UserError listing every problem, one line each, with the fix."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model {path} not found: pass --model PATH to a .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise UserError(f"{path} is not an ONNX model ({type(exc).__name__}): pass a .onnx file "
                        "of the WeNet / sherpa-onnx streaming-CTC contract") from None
    problems: list[str] = []
    meta = {p.key: p.value for p in model.metadata_props}
    values: dict[str, int] = {}
    for key in (*REQUIRED_KEYS, "chunk_size", "left_chunks"):
        if key not in meta:
            if key in REQUIRED_KEYS:
                problems.append(f"{path}: metadata key {key!r} is missing (sherpa-onnx requires "
                                f"{', '.join(REQUIRED_KEYS)}); {EXPORT_HINT}, or add it with "
                                "onnx (model.metadata_props)")
            continue
        try:
            values[key] = int(meta[key])
        except ValueError:
            problems.append(f"{path}: metadata {key}={meta[key]!r} is not an integer")
    if chunk_size is not None:
        values["chunk_size"] = chunk_size
    if left_chunks is not None:
        values["left_chunks"] = left_chunks
    for key, flag in (("chunk_size", "--chunk-size"), ("left_chunks", "--left-chunks")):
        if key not in values and not any(key in p for p in problems):
            problems.append(f"{path}: no {key} in the metadata: pass {flag} N (what you give "
                            f"sherpa-onnx as {'chunk_size' if key == 'chunk_size' else 'num_left_chunks'})")
    if meta.get("model_type", "wenet_ctc") != "wenet_ctc":
        problems.append(f"{path}: model_type is {meta['model_type']!r}, not 'wenet_ctc': only "
                        "streaming CTC models of the WeNet contract are supported")
    for key in ("head", "num_blocks", "output_size", "vocab_size", "chunk_size",
                "subsampling_factor", "cnn_module_kernel"):
        if key in values and values[key] < 1:
            problems.append(f"{path}: {key}={values[key]} must be positive")
    if "left_chunks" in values and values["left_chunks"] < 1:
        problems.append(f"{path}: left_chunks={values['left_chunks']}: the contract needs a "
                        "fixed cache (left_chunks >= 1; re-export with --num-left-chunks 4)")
    if values.get("head") and values.get("output_size") and values["output_size"] % values["head"]:
        problems.append(f"{path}: output_size {values['output_size']} is not a multiple of "
                        f"head {values['head']}")

    tok_path = Path(tokens) if tokens else path.parent / "tokens.txt"
    toks, blank = [], -1
    if not tok_path.is_file():
        problems.append(f"{tok_path} not found: put tokens.txt beside the model or pass --tokens FILE")
    else:
        toks, blank = read_tokens(tok_path, problems)
        if "vocab_size" in values and toks and len(toks) != values["vocab_size"]:
            problems.append(f"{tok_path} has {len(toks)} tokens, the model's vocab_size is "
                            f"{values['vocab_size']}: use the tokens.txt exported with this model")

    features = dict(SHERPA_FEATURES)
    for key in ("snip_edges", "low_freq", "high_freq", "dither"):  # `export` records these
        if f"fbank_{key}" in meta:
            v = meta[f"fbank_{key}"]
            try:
                features[key] = (v == "True") if key == "snip_edges" else float(v)
            except ValueError:
                problems.append(f"{path}: metadata fbank_{key}={v!r} is not a number")
    ready = all(k in values for k in (*REQUIRED_KEYS, "chunk_size", "left_chunks")) and not any(
        "must be positive" in p or "multiple of" in p for p in problems)
    spec = None
    if ready:
        spec = ContractSpec(
            path=str(path), sha256=sha256_file(path), tokens=tuple(toks), tokens_path=str(tok_path),
            blank_id=blank, metadata=meta, features=features, opset=max((o.version for o in model.opset_import
                                                      if o.domain in ("", "ai.onnx")), default=0),
            **{k: values[k] for k in (*REQUIRED_KEYS, "chunk_size", "left_chunks")})
    problems += _check_io(model, spec, path)
    if problems:
        raise UserError("\n".join(problems))
    assert spec is not None
    return spec


def _check_io(model, spec: ContractSpec | None, path: Path) -> list[str]:  # noqa: ANN001
    problems = []
    ins, outs = graph_inputs(model), list(model.graph.output)
    if len(ins) != len(INPUTS):
        names = ", ".join(i.name for i in ins)
        problems.append(f"{path} has {len(ins)} inputs ({names}), the contract has {len(INPUTS)} "
                        f"by position ({', '.join(INPUTS)}): a wrapper must consume offset and "
                        f"required_cache_size too (torch.onnx.export drops unused inputs); {EXPORT_HINT}")
    if len(outs) != len(OUTPUTS):
        problems.append(f"{path} has {len(outs)} outputs, the contract has {len(OUTPUTS)} "
                        f"({', '.join(OUTPUTS)}); {EXPORT_HINT}")
    want = spec.input_shapes() if spec else {}
    for role, vi in zip(INPUTS, ins if len(ins) == len(INPUTS) else [], strict=False):
        where = f"{path}: input {INPUTS.index(role)} ({vi.name!r}, the contract's {role})"
        if _dtype(vi) != _DTYPES[role]:
            problems.append(f"{where} is {_dtype(vi)}, the contract has {_DTYPES[role]}")
        dims = _dims(vi)
        rank = len(_WHAT[role].split(","))
        if len(dims) != rank:
            problems.append(f"{where} has rank {len(dims)} {dims}, the contract has rank {rank}: "
                            f"{_WHAT[role]}")
            continue
        for axis, d in enumerate(dims):
            if isinstance(d, str) and axis not in _MAY_BE_DYNAMIC[role]:
                problems.append(f"{where} dim {axis} is dynamic ({d!r}); the contract fixes it "
                                f"({_WHAT[role]}): re-export without a dynamic axis there")
            elif want and isinstance(d, int) and d != want[role][axis]:
                problems.append(f"{where} dim {axis} is {d}, the metadata make it "
                                f"{want[role][axis]} ({_WHAT[role]})")
    if spec and outs:
        vi = outs[0]
        dims = _dims(vi)
        if _dtype(vi) != "float32":
            problems.append(f"{path}: output 0 (log-probs) is {_dtype(vi)}, the contract has float32")
        if len(dims) != 3:
            problems.append(f"{path}: output 0 (log-probs) has rank {len(dims)}, the contract has "
                            "[1, chunk, vocab]")
        elif isinstance(dims[2], int) and dims[2] != spec.vocab_size:
            problems.append(f"{path}: output 0 has {dims[2]} classes, vocab_size is "
                            f"{spec.vocab_size} (an encoder without its CTC layer? {EXPORT_HINT})")
    for k, role in ((1, "next attn_cache"), (2, "next conv_cache")):
        if len(outs) > k and len(_dims(outs[k])) not in (0, 4):
            problems.append(f"{path}: output {k} ({role}) has rank {len(_dims(outs[k]))}, the "
                            "contract has 4")
    return problems


def _static_model(spec: ContractSpec):  # noqa: ANN202 - onnx.ModelProto
    """The file with every dim fixed from the contract and required_cache_size a constant."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(spec.path)  # with external data, if any
    shapes = spec.input_shapes()
    ins = graph_inputs(model)
    for role, vi in zip(INPUTS, ins, strict=True):
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            d.Clear()
            d.dim_value = shapes[role][axis]
    rcs = ins[2]
    const = helper.make_node("Constant", [], [rcs.name], name="required_cache_size_bound",
                             value=numpy_helper.from_array(np.array([spec.cache], np.int64)))
    model.graph.node.insert(0, const)
    model.graph.input.remove(rcs)
    del model.graph.value_info[:]  # dynamic dims of intermediates: re-derived from the inputs
    outs = spec.output_shapes()
    for vi, role in zip(model.graph.output, OUTPUTS, strict=True):
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            d.Clear()
            d.dim_value = outs[role][axis]
    # with the shapes fixed, what exporters compute from them (Shape -> Gather -> Range, ...)
    # folds to constants, so TVM sees static shapes; onnxscript folds only small tensors
    # (input_size_limit), so weights and int8 DequantizeLinear of weights stay as they are
    import onnxscript.optimizer

    model = onnxscript.optimizer.optimize(model)
    # scalars and int64 index/shape tensors are constants of the graph, not weights (a scalar
    # `main` parameter would also lose its rank in numpy's contiguous copies); per-tensor
    # quantization scales and zero points are scalars too
    consts = [t for t in model.graph.initializer
              if len(t.dims) == 0 or t.data_type == onnx.TensorProto.INT64]
    for t in consts:
        model.graph.initializer.remove(t)
        model.graph.node.insert(0, helper.make_node("Constant", [], [t.name], value=t))
    return model


def _static(ty) -> bool:  # noqa: ANN001 - relax.Type
    from tvm import relax

    shape = getattr(ty, "shape", None)
    return isinstance(ty, relax.TensorType) and shape is not None and all(
        isinstance(d, int) or hasattr(d, "value") for d in shape.values)


def import_contract(spec: ContractSpec, bind: bool = False):  # noqa: ANN201
    """(IRModule, weights): `main(x, offset, attn_cache, conv_cache, attn_mask, *weights)`
    -> (log_probs, next_attn_cache, next_conv_cache), all shapes static; weights [] with `bind`."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = _static_model(spec)
    try:
        mod = from_onnx(model, keep_params_in_input=True)
    except Exception as exc:  # an operator TVM's ONNX frontend does not know
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{spec.path}: TVM's ONNX importer failed ({last[:300]}); the graph "
                        "uses something tvm.relax.frontend.onnx does not support") from None
    mod, params = relax.frontend.detach_params(mod)
    weights = [np.ascontiguousarray(p.numpy()) for p in params.get("main", [])]
    func = mod["main"]
    for i, ty in enumerate(getattr(func.body.ty, "fields", [func.body.ty])):
        if not _static(ty):
            raise UserError(f"{spec.path}: output {i} imports with a shape that depends on the "
                            f"input values ({ty}); the contract needs static shapes (chunk, cache)")
    if bind:
        names = [v.name_hint for v in func.params[len(MAIN_INPUTS):]]
        mod = relax.transform.BindParams("main", dict(zip(names, weights, strict=True)))(mod)
        weights = []
    return mod, weights
