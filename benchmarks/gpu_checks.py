"""Correctness and whole-program checks for one accelerator run (the first half of gpu_run.sh).

    python benchmarks/gpu_checks.py --out DIR [--quick] [--only grads,fused_modes,...]

Each check prints one line and appends one JSON record to ``DIR/checks.jsonl`` with
``"check"``, its figures and ``"ok"`` (true, false, or null when it only measures). A check
that raises is recorded with ``"error"`` and the run goes on. Checks, in order:

- ``grads``: ``value_and_grad`` of ``simple_cnn``, ``bn_cnn`` and ``resnet`` on a batch of 32
  standard-normal 28x28x1 inputs in the manual and custom_vjp modes against autodiff (same key,
  so the same dropout masks), float32, twice: under ``jax.default_matmul_precision("highest")``
  (tolerance 1e-4: the backward formulas) and under the default precision (tolerance 2e-2: on a
  GPU, float32 convolutions and matmuls may run in TF32, and each mode's products round
  differently). Random inputs, not images: Fashion-MNIST's constant backgrounds make exact
  ties inside max-pool windows, where any tied cell is a valid subgradient and two compiled
  programs may pick different ones (measured on CPU: bn_cnn's modes differ by 1e-2 on real
  images under plain ``jax.jit``, 1e-6 on random ones).
- ``fused_modes``: ``fit(fused=True)`` one epoch of ``simple_cnn`` in every gradient mode; the
  losses are finite and the modes' mean training losses agree within 2e-2 (their parameters'
  relative difference after the epoch is reported, not judged: rounding and max-pool ties
  compound over hundreds of steps).
- ``precision``: one ``fit`` epoch of ``simple_cnn`` in float32 and in bfloat16
  (``fnn.precision.apply_policy``): seconds, test accuracy (> 0.75 on full data).
- ``mesh``: ``fit(mesh=fnn.parallel.data_mesh(1))`` against plain ``fit``, same key: parameters
  after 4 steps at the highest matmul precision within 1e-5, and one epoch's mean training loss
  within 2e-2. After the whole epoch the parameters' relative difference is reported next to
  that of plain ``fit`` run twice: on the H200 (2026-12-04) one epoch of ``mesh`` against plain
  differed by 4e-2, the size of the gradient modes' differences after an epoch (8e-2 to 0.15),
  rounding compounded over 468 steps, so the epoch is not judged bit for bit.
- ``vmap_search``: 16 learning rates of ``simple_cnn`` for one epoch: ``vmap_search`` vectorized
  (one vmapped program) against ``vectorize=False`` (the same program without vmap, run for one
  config after another: 16 sequential runs that compile once); the goal is >= 4x in training
  seconds (compilation excluded on both sides; wall times with compilation reported too).
- ``profile``: a ``jax.profiler`` trace of one fused ``simple_cnn`` epoch and the optimized HLO
  of that epoch program, tarred into ``DIR/profile.tar.gz`` (the device tool returns at most 8
  files, two folders deep).

``--quick`` runs everything on a 1,280-image subset (a CPU smoke test of the script).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from run import load_data  # noqa: E402

from fnn import losses, models, optim, parallel  # noqa: E402
from fnn.backprop import MODES, value_and_grad  # noqa: E402
from fnn.gradcheck import rel_err  # noqa: E402
from fnn.precision import apply_policy  # noqa: E402
from fnn.search import vmap_search  # noqa: E402
from fnn.train import Progress, evaluate, fit  # noqa: E402

TIGHT, LOOSE = 1e-4, 2e-2
MAX_FILE = 15_000_000   # bytes: profile.tar.gz must come back from the device tool
LOSS = losses.softmax_cross_entropy
QUIET = [Progress(False)]


def _fit(model, data, *, key=0, epochs=1, batch=128, lr=1e-3, **kw):
    return fit(model, LOSS, optim.adam(lr), data, epochs=epochs, batch_size=batch, key=key,
               callbacks=QUIET, **kw)


def check_grads(data, quick):
    x, y = jax.random.normal(jax.random.key(2), (32, 28, 28, 1)), jnp.asarray(data.y_train[:32])
    rows, ok = [], True
    for name in ("simple_cnn", "bn_cnn", "resnet"):
        model = getattr(models, name)()
        _, params, state = model.init(jax.random.key(0), (28, 28, 1))
        key = jax.random.key(1)
        for precision, tol in (("highest", TIGHT), ("default", LOOSE)):
            scope = (jax.default_matmul_precision("highest") if precision == "highest"
                     else contextlib.nullcontext())
            with scope:
                out = {m: jax.jit(lambda p, s, xb, yb, m=m, net=model, k=key: value_and_grad(net, LOSS, grad_mode=m)(
                    p, s, xb, yb, key=k, train=True))(params, state, x, y) for m in MODES}
            ref_loss, ref_grads = out["autodiff"][0][0], out["autodiff"][1]
            for m in ("manual", "custom_vjp"):
                err = rel_err(out[m][1], ref_grads)
                loss_err = abs(float(out[m][0][0]) - float(ref_loss)) / max(abs(float(ref_loss)), 1e-30)
                good = err <= tol and loss_err <= tol
                ok &= good
                rows.append({"model": name, "precision": precision, "mode": m, "grad_rel_err": err,
                             "loss_rel_err": loss_err, "tol": tol, "ok": good})
                print(f"  grads {name:10s} {precision:8s} {m:10s} vs autodiff: rel err {err:.2e} "
                      f"(loss {loss_err:.1e}), tol {tol:g} -> {'ok' if good else 'FAIL'}", flush=True)
    return {"rows": rows, "ok": ok}


def check_fused_modes(data, quick):
    train = (data.x_train, data.y_train)
    params, rows = {}, []
    for m in MODES:
        ts, hist = _fit(models.simple_cnn(), train, grad_mode=m)
        params[m] = ts.params
        rows.append({"mode": m, "train_loss": hist.train_loss[0], "seconds": hist.seconds[0],
                     "compile_s": hist.compile_seconds})
        print(f"  fused epoch {m:10s}: loss {hist.train_loss[0]:.4f}, {hist.seconds[0]:.3f} s "
              f"(compile {hist.compile_seconds:.1f} s)", flush=True)
    errs = {m: rel_err(params[m], params["autodiff"]) for m in ("manual", "custom_vjp")}
    ref = rows[MODES.index("autodiff")]["train_loss"]
    loss_errs = {r["mode"]: abs(r["train_loss"] - ref) / abs(ref) for r in rows}
    finite = all(math.isfinite(r["train_loss"]) for r in rows)
    print(f"  parameters vs autodiff after the epoch: {errs}", flush=True)
    return {"rows": rows, "param_rel_err_vs_autodiff": errs, "loss_rel_err_vs_autodiff": loss_errs, "tol": LOOSE,
            "ok": finite and all(e <= LOOSE for e in loss_errs.values())}


def check_precision(data, quick):
    rows = {}
    for label, model in (("float32", models.simple_cnn()), ("bfloat16", apply_policy(models.simple_cnn(),
                                                                                      jnp.bfloat16))):
        ts, hist = _fit(model, (data.x_train, data.y_train))
        acc = evaluate(models.simple_cnn(), LOSS, ts.params, ts.state, data.x_test, data.y_test)["accuracy"]
        rows[label] = {"seconds": hist.seconds[0], "compile_s": hist.compile_seconds,
                       "train_loss": hist.train_loss[0], "test_acc": float(acc)}
        print(f"  fit epoch {label:8s}: {hist.seconds[0]:.3f} s, loss {hist.train_loss[0]:.4f}, "
              f"test acc {acc:.4f}", flush=True)
    floor = 0.3 if quick else 0.75
    return {"rows": rows, "min_acc": floor, "ok": all(r["test_acc"] > floor for r in rows.values())}


def _params_equal(a, b) -> tuple[float, bool]:
    bitwise = all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return rel_err(a, b), bitwise


def check_mesh(data, quick):
    """fit(mesh=data_mesh(1)) against plain fit: 4 steps at the highest matmul precision (the sharp
    test: a wrong split or a wrong gradient average shows there), and a whole epoch, next to
    plain fit run twice (what rounding alone does over hundreds of steps on this device)."""
    short = (data.x_train[:512], data.y_train[:512])
    with jax.default_matmul_precision("highest"):
        p4, _ = _fit(models.simple_cnn(), short, key=3)
        m4, _ = _fit(models.simple_cnn(), short, key=3, mesh=parallel.data_mesh(1))
    err4, bitwise4 = _params_equal(m4.params, p4.params)
    train = (data.x_train, data.y_train)
    plain, h_plain = _fit(models.simple_cnn(), train, key=3)
    again, _ = _fit(models.simple_cnn(), train, key=3)
    meshed, h_mesh = _fit(models.simple_cnn(), train, key=3, mesh=parallel.data_mesh(1))
    err, bitwise = _params_equal(meshed.params, plain.params)
    base, base_bitwise = _params_equal(again.params, plain.params)
    loss_err = abs(h_mesh.train_loss[0] - h_plain.train_loss[0]) / abs(h_plain.train_loss[0])
    print(f"  fit(mesh=data_mesh(1)) vs fit: 4 steps rel err {err4:.2e} (bitwise {bitwise4}); one epoch "
          f"rel err {err:.2e} (bitwise {bitwise}), loss rel err {loss_err:.1e}; plain fit twice: "
          f"rel err {base:.2e} (bitwise {base_bitwise})", flush=True)
    return {"steps4_rel_err": err4, "steps4_bitwise": bitwise4, "rel_err": err, "bitwise": bitwise,
            "loss_rel_err": loss_err, "rerun_rel_err": base, "rerun_bitwise": base_bitwise,
            "tol": 1e-5, "loss_tol": LOOSE, "ok": err4 <= 1e-5 and loss_err <= LOOSE}


def check_vmap_search(data, quick):
    n = len(data.x_train) if not quick else 1280
    train = (jnp.asarray(data.x_train[:n]), jnp.asarray(data.y_train[:n]))
    configs = [{"learning_rate": float(v)} for v in np.geomspace(1e-4, 1e-2, 16)]
    runs = {}
    for vectorize in (True, False):
        t = time.perf_counter()
        res = vmap_search(models.simple_cnn(), LOSS, lambda c: optim.adam(c["learning_rate"]), train, configs,
                          epochs=1, batch_size=128, vectorize=vectorize, progress=False)
        runs[vectorize] = (res.seconds, time.perf_counter() - t, res.compile_seconds)
    (v_s, v_wall, v_comp), (s_s, s_wall, _) = runs[True], runs[False]
    speedup = s_s / v_s
    print(f"  16 configs: vmapped {v_s:.3f} s training ({v_wall:.1f} s wall), one after another "
          f"{s_s:.3f} s ({s_wall:.1f} s wall): {speedup:.2f}x (wall {s_wall / v_wall:.2f}x)", flush=True)
    return {"vmap_s": v_s, "vmap_compile_s": v_comp, "vmap_wall_s": v_wall, "sequential_s": s_s,
            "sequential_wall_s": s_wall, "speedup": speedup, "wall_speedup": s_wall / v_wall, "goal": 4.0,
            "ok": speedup >= 4.0}


def check_profile(data, quick, out: Path):
    from fnn.train import epoch as ep

    train = (data.x_train, data.y_train)
    model, opt = models.simple_cnn(), optim.adam(1e-3)
    # The same optimizer object both times: fit's compiled programs are cached per optimizer,
    # so the traced epoch runs warm (no compilation inside the trace).
    ts, _ = fit(model, LOSS, opt, train, epochs=1, batch_size=128, key=0, callbacks=QUIET)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            ts, hist = fit(model, LOSS, opt, train, epochs=2, batch_size=128, train_state=ts, callbacks=QUIET)
        hlo = _epoch_hlo(ep, model, opt, data).encode()
        for with_trace in (True, False):   # the device tool returns files of at most 16 MB
            with tarfile.open(out / "profile.tar.gz", "w:gz") as tar:
                if with_trace:
                    tar.add(tmp, arcname="trace")
                info = tarfile.TarInfo("fused_epoch.hlo.txt")
                info.size = len(hlo)
                tar.addfile(info, io.BytesIO(hlo))
            size = (out / "profile.tar.gz").stat().st_size
            if size <= MAX_FILE:
                break
            print(f"  profile: {size / 1e6:.1f} MB with the trace, over {MAX_FILE / 1e6:.0f} MB: HLO only",
                  flush=True)
    print(f"  profile: trace of a fused epoch ({hist.seconds[-1]:.3f} s) and its HLO -> profile.tar.gz "
          f"({size / 1e6:.1f} MB)", flush=True)
    return {"epoch_s": hist.seconds[-1], "bytes": size, "trace": with_trace, "ok": None}


def _epoch_hlo(ep, model, opt, data) -> str:
    """The optimized HLO of the fused epoch program fit compiles for simple_cnn."""
    try:
        from fnn.train import init_train_state, resolve_grad_mode

        progs = ep.programs(model, LOSS, opt, None, resolve_grad_mode("auto"), 128, "drop")
        ts = init_train_state(model, opt, (28, 28, 1), key=jax.random.key(0))
        x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
        return progs.epoch.lower(ts, x, y, jnp.asarray(1.0, jnp.float32)).compile().as_text()
    except Exception:   # the program's internals may change; the trace is what matters
        return "could not lower the epoch program:\n" + traceback.format_exc()


CHECKS = {"grads": check_grads, "fused_modes": check_fused_modes, "precision": check_precision,
          "mesh": check_mesh, "vmap_search": check_vmap_search, "profile": check_profile}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for checks.jsonl and profile.tar.gz")
    ap.add_argument("--quick", action="store_true", help="a 1,280-image subset: a smoke test of the script")
    ap.add_argument("--only", default=",".join(CHECKS), help="comma-separated checks (default: all)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_data(args.quick, 128)
    if args.quick:
        data = data._replace(x_train=data.x_train[:1280], y_train=data.y_train[:1280],
                             x_test=data.x_test[:1000], y_test=data.y_test[:1000])
    print(f"# gpu_checks on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{len(data.x_train)} training images", flush=True)
    failed = 0
    for name in args.only.split(","):
        t = time.perf_counter()
        print(f"{name}:", flush=True)
        try:
            fn = CHECKS[name]
            rec = fn(data, args.quick, args.out) if name == "profile" else fn(data, args.quick)
        except Exception as e:     # record it and go on: one GPU run must bring back everything it can
            traceback.print_exc()
            rec = {"error": f"{type(e).__name__}: {e}"[:500], "ok": False}
        rec = {"check": name, "seconds": time.perf_counter() - t, "device": jax.devices()[0].device_kind,
               "quick": args.quick, **rec}
        failed += rec.get("ok") is False
        with open(args.out / "checks.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"  -> {name}: {'ok' if rec['ok'] else 'measured' if rec['ok'] is None else 'FAILED'} "
              f"in {rec['seconds']:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
