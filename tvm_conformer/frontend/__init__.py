"""PyTorch -> TVM Relax: the streaming step through torch.export or ONNX."""

from tvm_conformer.frontend.export import FRONTENDS, export_onnx, import_step

__all__ = ["FRONTENDS", "export_onnx", "import_step"]
