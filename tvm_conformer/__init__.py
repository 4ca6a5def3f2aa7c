"""tvm-conformer: a streaming Conformer-CTC from PyTorch to edge devices through Apache TVM."""

__version__ = "0.1.0"
