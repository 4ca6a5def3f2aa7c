"""One skinny matmul of the streaming step, as the rules schedule it, with the weight row-major
(K, N) and packed (N/l, K, l), timed interleaved in one process beside numpy's sgemm (OpenBLAS)
of the same shape: hot (one weight, in cache) and cold (the call cycles through enough copies of
the weight to exceed the L3, as a step's 128 MB of weights do). Prints GFLOP/s and GB/s of
weight traffic; the load average before and after (the machine is shared: compare within a run).

    .venv/bin/python scripts/matmul_kernels.py --shape 16 256 2048 --shape 16 2048 256
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import tvm
from tvm import te

from tvm_conformer.compiler.schedule_rules import family_rules, weight_panel_lanes
from tvm_conformer.passes.pack_weights import _packed_matmul
from tvm_conformer.targets import load_target

TARGET = load_target("host").tvm()


def _build(m: int, k: int, n: int, packed: bool, lanes: int):  # noqa: ANN202
    x = te.placeholder((1, m, k), name="x")
    if packed:
        w = te.placeholder((n // lanes, k, lanes), name="w")
        y = _packed_matmul(x, w, n, "float32")
    else:
        w = te.placeholder((k, n), name="w")
        r = te.reduce_axis((0, k), "k")
        y = te.compute((1, m, n), lambda b, i, j: te.sum(x[b, i, r] * w[r, j], axis=r), name="mm")
    func = te.create_prim_func([x, w, y]).with_attr("global_symbol", "main")
    mod = tvm.IRModule({"main": func})
    with TARGET:
        mod = family_rules("cpu", float("inf"))(mod)
    return tvm.compile(mod, target=TARGET)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, action="append", metavar=("M", "K", "N"))
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cold-mb", type=int, default=96)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    lanes = weight_panel_lanes("cpu", TARGET)
    dev = tvm.cpu()
    print(f"load average before: {os.getloadavg()}; panel lanes {lanes}")
    print("| M x K x N | variant | hot us | hot GFLOP/s | cold us | cold GFLOP/s | cold weight GB/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for m, k, n in args.shape or [[16, 256, 2048], [16, 2048, 256]]:
        rng = np.random.default_rng(0)
        xs = rng.standard_normal((1, m, k), dtype=np.float32)
        copies = max(1, args.cold_mb * 2**20 // (k * n * 4))
        ws = [rng.standard_normal((k, n), dtype=np.float32) for _ in range(copies)]
        pk = [np.ascontiguousarray(w.reshape(k, n // lanes, lanes).transpose(1, 0, 2)) for w in ws]
        fns = {"row-major": (_build(m, k, n, False, lanes), ws),
               "packed": (_build(m, k, n, True, lanes), pk)}
        x_t = tvm.runtime.tensor(xs, dev)
        out = tvm.runtime.tensor(np.zeros((1, m, n), np.float32), dev)
        ref = xs[0] @ ws[0]
        times: dict[str, tuple[list, list]] = {name: ([], []) for name in [*fns, "numpy"]}
        dev_w = {name: [tvm.runtime.tensor(w, dev) for w in arrs] for name, (_, arrs) in fns.items()}
        for name, (lib, _) in fns.items():
            lib["main"](x_t, dev_w[name][0], out)
            np.testing.assert_allclose(out.numpy()[0], ref, rtol=1e-4, atol=1e-3)
        for _ in range(args.rounds):
            for name in times:
                if name == "numpy":
                    with threadpool_limits(1):
                        t0 = time.perf_counter()
                        for _ in range(20):
                            xs[0] @ ws[0]
                        hot = (time.perf_counter() - t0) / 20
                        t0 = time.perf_counter()
                        for w in ws:
                            xs[0] @ w
                        cold = (time.perf_counter() - t0) / len(ws)
                else:
                    f = fns[name][0]["main"]
                    ev = fns[name][0].mod.time_evaluator("main", dev, number=20, repeat=1)
                    hot = ev(x_t, dev_w[name][0], out).mean
                    t0 = time.perf_counter()
                    for w in dev_w[name]:
                        f(x_t, w, out)
                    cold = (time.perf_counter() - t0) / len(ws)
                times[name][0].append(hot)
                times[name][1].append(cold)
        flop = 2 * m * k * n
        for name, (hot, cold) in times.items():
            h, c = float(np.median(hot)), float(np.median(cold))
            print(f"| {m}x{k}x{n} | {name} | {h * 1e6:.1f} | {flop / h / 1e9:.1f} | {c * 1e6:.1f} | "
                  f"{flop / c / 1e9:.1f} | {k * n * 4 / c / 1e9:.1f} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
