"""The emulated aarch64 board: cross-compile on the host, run over TVM RPC, manage boards by CLI."""

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tvm_conformer.cli import main
from tvm_conformer.errors import UserError
from tvm_conformer.rpc.tracker import free_port, request_device

if TYPE_CHECKING:
    from board_fixtures import EmulatedBoard

pytest_plugins = ["board_fixtures"]

TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55", "mattr": ["+neon"]}


def _matmul_relu_library(path: Path, cross_cxx: str) -> None:
    """Compile relu(x @ w) for the aarch64 target and link it with the cross g++."""
    import tvm
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 16), "float32")):
            with R.dataflow():
                y = R.nn.relu(R.matmul(x, w))
                R.output(y)
            return y

    ex = tvm.compile(Module, target=tvm.target.Target(TARGET))
    ex.export_library(str(path), fcompile=tvm.support.cc.cross_compiler(cross_cxx))


@pytest.mark.board
@pytest.mark.slow
def test_matmul_relu_runs_on_the_board(emulated_board: "EmulatedBoard", tmp_path: Path) -> None:
    import tvm
    from tvm import relax

    board = emulated_board
    lib_path = tmp_path / "matmul_relu.so"
    _matmul_relu_library(lib_path, board.cross_cxx)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8), dtype=np.float32)
    w = rng.standard_normal((8, 16), dtype=np.float32)

    session = request_device(board.tracker_host, board.tracker_port, board.key, timeout_s=60)
    session.upload(str(lib_path))
    dev = session.cpu()
    vm = relax.VirtualMachine(session.load_module(lib_path.name), dev)
    vm.set_input("main", tvm.runtime.tensor(x, dev), tvm.runtime.tensor(w, dev))
    vm.invoke_stateful("main")
    out = vm.get_outputs("main").numpy()
    np.testing.assert_allclose(out, np.maximum(x @ w, 0.0), rtol=1e-5, atol=1e-5)


@pytest.mark.board
@pytest.mark.slow
def test_setup_is_cached(emulated_board: "EmulatedBoard") -> None:
    from tvm_conformer.rpc.board_setup import ensure_board_root

    start = time.monotonic()
    board = ensure_board_root(progress=False)
    assert time.monotonic() - start < 2.0
    assert board.wrap.is_file() and (board.site / "tvm").is_dir()


@pytest.mark.board
@pytest.mark.slow
def test_unknown_key_times_out_with_a_clear_error(emulated_board: "EmulatedBoard") -> None:
    board = emulated_board
    with pytest.raises(UserError, match=r"no device with key 'no-such-board' is registered"):
        request_device(board.tracker_host, board.tracker_port, "no-such-board", timeout_s=2)


def test_unreachable_tracker_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="no RPC tracker at"):
        request_device("127.0.0.1", free_port(), "any", timeout_s=1, progress=False)


@pytest.mark.board
@pytest.mark.slow
def test_cli_up_status_down(emulated_board: "EmulatedBoard", capsys: pytest.CaptureFixture) -> None:
    board = emulated_board
    tracker = f"{board.tracker_host}:{board.tracker_port}"
    key = f"pytest-cli-{uuid.uuid4().hex[:8]}"
    assert main(["board", "up", "--cpu", "cortex-a53", "--key", key, "--tracker", tracker]) == 0
    try:
        assert main(["board", "status", "--tracker", tracker]) == 0
        status = capsys.readouterr().out
        assert f"key {key}  cpu cortex-a53" in status
        assert f"server:{board.key}" in status
    finally:
        assert main(["board", "down", "--key", key]) == 0
    assert "stopped 1 board(s)" in capsys.readouterr().out
    assert main(["board", "status", "--tracker", tracker]) == 0
    assert key not in capsys.readouterr().out


def test_missing_qemu_is_a_one_line_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from tvm_conformer.rpc.board_setup import ensure_board_root

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t == "qemu-aarch64" else real_which(t))
    with pytest.raises(UserError, match=r"apt-get install qemu-user"):
        ensure_board_root(cache=tmp_path, progress=False)
