# tvm-conformer: every target installs what it needs on a fresh Debian 12 machine (as root or with sudo).
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
APT_PKGS := espeak-ng sox festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite \
            fortunes fortunes-min alsa-utils qemu-user g++-aarch64-linux-gnu g++-arm-linux-gnueabihf \
            lld clang llvm binutils file pocl-opencl-icd ocl-icd-libopencl1 clinfo
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt venv demo test test-fast cross lint data train bench clean

setup: apt venv

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

$(BIN)/tvm-conformer: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

venv: $(BIN)/tvm-conformer

# The main job on the embedded defaults: the shipped model and recording, compiled for the host.
demo: setup
	$(BIN)/tvm-conformer transcribe --backend tvm --json

test: setup
	$(BIN)/pytest -q -ra

test-fast: setup
	$(BIN)/pytest -q -ra -m "not slow"

# The shipped model for every device in targets/, fp32 and fp16, each checked without a device
# (ELF, NEON/HVX in the hot kernels, OpenCL through clang, loading here where it can).
cross: setup
	scripts/ci_cross_compile.sh

lint: venv
	$(BIN)/ruff check tvm_conformer tests schedules

# Regenerate the corpus (espeak-ng, ~4 min) and retrain both shipped models side by side, one
# core each (docs/TRAINING.md: five stages, ~235 min of wall time on this 2-core machine).
data: setup
	$(BIN)/tvm-conformer make-data --out data --train 8000 --valid 300 --test 300 --seed 0

train: data
	scripts/train_shipped.sh dws & dws=$$!; scripts/train_shipped.sh vanilla && wait $$dws

bench: setup
	$(BIN)/tvm-conformer bench --suite full --out bench_results

clean:
	rm -rf build bench_results .pytest_cache
