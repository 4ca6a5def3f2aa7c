#!/usr/bin/env bash
# CI: the shipped model compiled for every device in targets/, fp32 and fp16, into
# build/ci-artifacts/<target>-<precision>/, each checked without a device (ELF header, NEON/HVX
# code in the hot kernels, OpenCL through clang, loading on this machine where it can).
# Then a model none of our code wrote, in the WeNet / sherpa-onnx streaming-CTC ONNX contract
# (tests/contract_models.py, small, random weights), imported and compiled fp32 for every
# device into build/ci-artifacts/contract/<target>-fp32/, checked the same way.
# Prints one summary row per build (size, kernels, roofline RTF bound); exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/tvm-conformer compile --target all --precision fp32,fp16 --check \
    -o build/ci-artifacts "$@"
.venv/bin/python tests/contract_models.py small build/ci-artifacts/contract-model
exec .venv/bin/tvm-conformer compile --model build/ci-artifacts/contract-model/model.onnx \
    --target all --precision fp32 --check -o build/ci-artifacts/contract "$@"
