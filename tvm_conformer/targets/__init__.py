"""Device descriptions: `targets/*.toml`, one file per device, validated on load."""

from tvm_conformer.targets.registry import DeviceTarget, list_targets, load_target

__all__ = ["DeviceTarget", "list_targets", "load_target"]
