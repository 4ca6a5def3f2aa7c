#!/usr/bin/env bash
# CI: the shipped model compiled for every device in targets/, fp32 and fp16 (and int8 for the
# Arm CPUs and Hexagon), two builds at a time (JOBS=2: a build uses one core), into
# build/ci-artifacts/<target>-<precision>/, each checked without a device (ELF header, NEON/HVX
# code in the hot kernels, OpenCL through clang, every Mali kernel run on PoCL against its llvm
# build, loading on this machine where it can).
# Then a model none of our code wrote, in the WeNet / sherpa-onnx streaming-CTC ONNX contract
# (tests/contract_models.py, small, random weights), imported and compiled fp32 for every
# device into build/ci-artifacts/contract/<target>-fp32/, checked the same way.
# Prints one summary row per build (size, kernels, roofline RTF bound); exits 1 on any failure,
# and when a Mali build's kernels were not all run and matched (no OpenCL platform: `make setup`
# installs PoCL).
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/ci-artifacts
jobs=${JOBS:-2}
.venv/bin/tvm-conformer compile --target all --precision fp32,fp16 --check --jobs "$jobs" -o "$out" "$@"
# int8 for Hexagon (vrmpy; ~460 s a build, so first, side by side) and every Arm CPU target
# (sdot where the core has it, NEON widening multiplies elsewhere)
int8=$(.venv/bin/python -c "from tvm_conformer.targets import list_targets
print(','.join([t.name for t in list_targets() if t.family == 'hexagon']
               + [t.name for t in list_targets() if t.family == 'cpu'
                  and str(t.tvm_target.get('mtriple', '')).startswith(('aarch64', 'arm'))]))")
.venv/bin/tvm-conformer compile --target "$int8" --precision int8 --check --jobs "$jobs" -o "$out" "$@"
.venv/bin/python tests/contract_models.py small "$out/contract-model"
.venv/bin/tvm-conformer compile --model "$out/contract-model/model.onnx" \
    --target all --precision fp32 --check --jobs "$jobs" -o "$out/contract" "$@"
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
bad = []
for manifest in sorted(Path(sys.argv[1]).rglob("mali-*/manifest.json")):
    run = json.loads(manifest.read_text()).get("checks", {}).get("opencl_run")
    ok = run is not None and run["run"] is not None and run["passed"] == run["kernels"] > 0
    keys = ("kernels", "run", "passed", "worst_error", "not_run")
    print(f"{manifest.parent}: opencl_run {run and {k: run.get(k) for k in keys}}")
    bad += [] if ok else [str(manifest.parent)]
sys.exit(f"Mali kernels not all run and matched on PoCL: {', '.join(bad)}" if bad else 0)
PY
