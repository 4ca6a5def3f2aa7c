"""Checks of a compiled artifact that need no device (ELF header, SIMD instructions in the
kernels, OpenCL kernels through clang) and loading it where this machine can run it."""
