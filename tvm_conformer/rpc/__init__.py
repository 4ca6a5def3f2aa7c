"""TVM RPC: a tracker, the emulated aarch64 board (qemu), and requesting a device from a tracker.

TVM RPC is unauthenticated: everything here binds to the loopback interface by default.
"""
