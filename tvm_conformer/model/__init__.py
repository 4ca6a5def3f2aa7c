"""The streaming Conformer-CTC (with an optional attention-decoder head) in PyTorch."""

from tvm_conformer.model.asr import ConformerASR, load_checkpoint, save_checkpoint
from tvm_conformer.model.config import ModelConfig
from tvm_conformer.model.tokenizer import CharTokenizer

__all__ = ["ConformerASR", "CharTokenizer", "ModelConfig", "load_checkpoint", "save_checkpoint"]
