#!/usr/bin/env bash
# CI: the shipped model compiled for every device in targets/, fp32 and fp16, into
# build/ci-artifacts/<target>-<precision>/, each checked without a device (ELF header, NEON/HVX
# code in the hot kernels, OpenCL through clang, loading on this machine where it can).
# Prints one summary row per build (size, kernels, roofline RTF bound); exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/tvm-conformer compile --target all --precision fp32,fp16 --check \
    -o build/ci-artifacts "$@"
