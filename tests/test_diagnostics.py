"""fnn.diagnostics: per-layer report, detectors, overfit_one_batch, the fit recorder, plot_grad_norms."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import Layer, Loss, diagnostics, init, losses, models, optim
from fnn.layers.activation import Relu, Sigmoid, Tanh
from fnn.layers.combinators import serial
from fnn.layers.dense import Dense
from fnn.plot import plot_grad_norms
from fnn.train import History, StepRecorder, fit, init_train_state

CE = losses.softmax_cross_entropy
D, C = 12, 3


@pytest.fixture(scope="module")
def batch():
    """64 examples of D standard-normal features, labels from a fixed linear rule (learnable)."""
    kx, kw = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (64, D), jnp.float32)
    y = jnp.argmax(x @ jax.random.normal(kw, (D, C), jnp.float32), axis=-1).astype(jnp.int32)
    return x, y


def deep(activation, w_init, depth=4, width=16):
    layers = []
    for _ in range(depth):
        layers += [Dense(width, w_init=w_init), activation()]
    return serial(*layers, Dense(C, w_init=w_init))


# Shared model objects: the report's compiled program is cached per model, so tests that only
# change the parameters reuse it.
RELU_NET = serial(Dense(16), Relu(), Dense(C))
SIGMOID_NET, TANH_NET = serial(Dense(16), Sigmoid(), Dense(C)), serial(Dense(16), Tanh(), Dense(C))


def report_of(model, batch, key=0, w_scale=None, **kw):
    _, params, state = model.init(jax.random.key(key), (D,))
    if w_scale is not None:  # the first layer's weights drawn from N(0, w_scale²)
        w = w_scale * jax.random.normal(jax.random.key(key + 1), params[0]["w"].shape, jnp.float32)
        params = ({**params[0], "w": w},) + params[1:]
    return diagnostics.layer_report(model, CE, params, state, *batch, **kw), params


# ----------------------------------------------------------------------------------------
# The report


def test_report_aligns_with_params_and_matches_jax_grad(batch):
    model = RELU_NET
    lr = 0.1
    rep, params = report_of(model, batch, optimizer=optim.sgd(lr))
    assert jax.tree.structure(rep.grad_norms) == jax.tree.structure(params)
    assert jax.tree.structure(rep.param_norms) == jax.tree.structure(params)
    assert rep.names == ("Dense(16)", "Relu", f"Dense({C})")
    assert [s.kind for s in rep.layers] == ["params", "relu", "params"]
    assert [s.num_params for s in rep.layers] == [D * 16 + 16, 0, 16 * C + C]
    state = ({}, {}, {})
    grads = jax.grad(lambda p: CE.value(model.apply(p, state, batch[0])[0], batch[1]))(params)
    np.testing.assert_allclose(rep.grad_norms[2]["w"], float(jnp.linalg.norm(grads[2]["w"])), rtol=1e-5)
    layer0 = math.sqrt(float(jnp.sum(grads[0]["w"] ** 2) + jnp.sum(grads[0]["b"] ** 2)))
    np.testing.assert_allclose(rep.layers[0].grad_norm, layer0, rtol=1e-5)
    assert rep.layers[1].grad_norm is None and rep.layers[1].update_ratio is None
    # SGD's update is -lr·g, so the ratio is lr·‖g‖/‖θ‖.
    out = rep.layers[2]
    np.testing.assert_allclose(out.update_ratio, lr * out.grad_norm / out.param_norm, rtol=1e-5)
    # Activation statistics of the ReLU layer are those of relu(x @ w + b).
    h = jax.nn.relu(batch[0] @ params[0]["w"] + params[0]["b"][None])
    np.testing.assert_allclose(rep.layers[1].act_mean, float(jnp.mean(h)), rtol=1e-5)
    np.testing.assert_allclose(rep.layers[1].act_std, float(jnp.std(h)), rtol=1e-4)


def test_all_negative_preactivations_give_100_percent_dead_relus(batch):
    _, params, state = RELU_NET.init(jax.random.key(0), (D,))
    dead = ({"w": jnp.zeros_like(params[0]["w"]), "b": jnp.full_like(params[0]["b"], -1.0)},) + params[1:]
    rep = diagnostics.layer_report(RELU_NET, CE, dead, state, *batch)
    assert rep.layers[1].dead_fraction == 1.0
    verdict = diagnostics.detect_dead_units(rep)
    assert verdict and "100.0% dead" in verdict.message
    healthy, _ = report_of(RELU_NET, batch)
    assert healthy.layers[1].dead_fraction < 0.5
    assert not diagnostics.detect_dead_units(healthy)


def test_saturated_sigmoid_and_tanh_are_flagged(batch):
    for net, kind in ((SIGMOID_NET, "sigmoid"), (TANH_NET, "tanh")):
        big, _ = report_of(net, batch, w_scale=10.0)
        assert big.layers[1].kind == kind
        assert big.layers[1].saturated_fraction > 0.8
        assert diagnostics.detect_saturation(big)
        small, _ = report_of(net, batch, w_scale=0.01)
        assert small.layers[1].saturated_fraction < 0.05
        assert not diagnostics.detect_saturation(small)


def test_deep_sigmoid_with_tiny_init_is_vanishing_and_he_relu_is_not(batch):
    vanishing, _ = report_of(deep(Sigmoid, init.normal(0.01)), batch)
    verdict = diagnostics.detect_vanishing(vanishing)
    assert verdict.detected and verdict.value < diagnostics.VANISHING_RATIO
    assert "VANISHING" in diagnostics.format_report(vanishing)
    healthy, _ = report_of(deep(Relu, init.he_normal), batch)
    verdict = diagnostics.detect_vanishing(healthy)
    assert not verdict.detected and verdict.value > 0.1


def test_model_from_fnn_models_and_single_layer(batch):
    model = models.mlp((D, 8, C), activation=Tanh)
    assert [layer.name for layer in diagnostics.sublayers(model)] == ["Dense(8)", "Tanh", f"Dense({C})"]
    assert diagnostics.sublayers(Dense(C)) is None
    # A model that is not a serial is reported as one layer.
    single, params = report_of(Dense(C), batch)
    assert len(single.layers) == 1 and single.layers[0].num_params == D * C + C
    assert jax.tree.structure(single.grad_norms) == jax.tree.structure(params)


def test_unnamed_activation_recognized_by_its_output(batch):
    relu = Relu()
    custom = Layer("MyAct", relu.init, relu.apply, relu.backward)
    rep, _ = report_of(serial(Dense(16), custom, Dense(C)), batch)
    assert rep.layers[1].kind == "relu" and rep.layers[1].dead_fraction is not None
    table = diagnostics.format_report(rep)
    assert "MyAct" in table and "grad_norm" in table


# ----------------------------------------------------------------------------------------
# Exploding and overfitting one batch


def test_huge_learning_rate_is_exploding(batch):
    huge = diagnostics.overfit_one_batch(RELU_NET, CE, optim.sgd(100.0), *batch, key=jax.random.key(0),
                                         steps=30)
    verdict = diagnostics.detect_exploding(huge)
    assert verdict.detected and "EXPLODING" in verdict.message
    assert not huge.passed


def test_detect_exploding_inputs():
    assert diagnostics.detect_exploding([1.0, 2.0, 500.0]).detected
    assert not diagnostics.detect_exploding([1.0, 0.5, 0.2]).detected
    assert diagnostics.detect_exploding([1.0, math.nan]).detected
    assert diagnostics.detect_exploding({"loss": [2.3, 1.0, 40.0]}).detected
    assert not diagnostics.detect_exploding({"loss": [2.3, 1.0, 0.5], "grad_norm": [1, 2, 3]}).detected
    stopped = History([{"epoch": 1, "train_loss": 2.0, "grad_norm": 1.0}])
    assert not diagnostics.detect_exploding(stopped).detected
    stopped.stop_reason = "fit: non-finite loss or gradient (NaN/Inf) at epoch 2, step 3 of 8; stopped"
    assert diagnostics.detect_exploding(stopped).detected


def test_overfit_one_batch_passes_for_a_correct_mlp_and_fails_for_broken_ones(batch):
    x, y = batch[0][:16], batch[1][:16]
    key = jax.random.key(0)
    model = RELU_NET
    ok = diagnostics.overfit_one_batch(model, CE, optim.adam(3e-2), x, y, key=key, steps=150)
    assert ok.passed, ok.message
    assert ok.losses.shape == (150,) and ok.final_loss <= ok.threshold
    assert ok.threshold == pytest.approx(diagnostics.OVERFIT_FRACTION * ok.initial_loss)
    assert not diagnostics.detect_exploding(ok)  # the counterpart of the huge learning rate
    # A loss whose gradient has the wrong sign climbs instead.
    wrong_sign = Loss("wrong_sign", CE.value, lambda pred, target: -CE.backward(pred, target))
    bad = diagnostics.overfit_one_batch(model, wrong_sign, optim.adam(3e-2), x, y, key=key, steps=150,
                                        grad_mode="manual")
    assert not bad.passed and bad.final_loss > bad.initial_loss and "FAILED" in bad.message
    # Zero weights: the hidden layer never learns (symmetric, dead), only the output bias does.
    stuck = serial(Dense(16, w_init=init.zeros), Relu(), Dense(C, w_init=init.zeros))
    assert not diagnostics.overfit_one_batch(stuck, CE, optim.adam(3e-2), x, y, key=key, steps=150).passed


# ----------------------------------------------------------------------------------------
# Recording during fit, and the plot


def test_recorder_in_fit_and_plot(batch, tmp_path):
    model = RELU_NET
    opt = optim.sgd(0.1)
    key = jax.random.key(0)
    rec = diagnostics.recorder(model, CE, *batch, optimizer=opt)
    ts0 = init_train_state(model, opt, (D,), key=key)
    rec(0, ts0)
    ts, _ = fit(model, CE, opt, batch, epochs=3, batch_size=16, key=key, callbacks=[rec], train_state=ts0)
    assert [r.epoch for r in rec.records] == [0, 1, 2, 3]
    assert [r.step for r in rec.records] == [0, 4, 8, 12]
    final = diagnostics.layer_report(model, CE, ts.params, ts.state, *batch, optimizer=opt,
                                     opt_state=ts.opt_state)
    assert rec.records[-1].report == final
    assert list(rec.grad_norms()) == ["[0] Dense(16)", f"[2] Dense({C})"]
    every2 = diagnostics.recorder(model, CE, *batch, every=2, optimizer=opt)
    fit(model, CE, opt, batch, epochs=3, batch_size=16, key=key, callbacks=[every2])
    assert [r.epoch for r in every2.records] == [2]

    path = plot_grad_norms(rec, tmp_path / "norms.png", title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    plot_grad_norms({"[0] Dense": [1.0, 0.1], "[2] Dense": [1.0, 1.0]}, tmp_path / "dict.png")
    with pytest.raises(ValueError, match="no gradient norms"):
        plot_grad_norms([], tmp_path / "empty.png")


# ----------------------------------------------------------------------------------------
# Per-step records from inside the fused epoch: fit(callbacks=[StepRecorder(N)])


def test_train_step_layer_stats_match_independent_gradients(batch):
    # Per-layer gradient norms against jax.grad of the plain loss, update ratios against the
    # parameters before and after the step (float64: exact up to rounding).
    from fnn.train import train_step

    x, y = (jnp.asarray(a, jnp.float64) if a.dtype.kind == "f" else a for a in batch)
    net, opt = RELU_NET, optim.momentum(0.1, 0.9)
    ts = init_train_state(net, opt, (D,), key=jax.random.key(3))
    new, m = jax.jit(train_step(net, CE, opt, layer_stats=True))(ts, x, y)
    grads = jax.grad(lambda p: CE.value(net.apply(p, ts.state, x)[0], y))(ts.params)
    norm = lambda tree: math.sqrt(sum(float(jnp.sum(a ** 2)) for a in jax.tree.leaves(tree)))
    want_g = [norm(g) for g in grads]
    want_r = [norm(jax.tree.map(jnp.subtract, a, b)) / norm(b) if jax.tree.leaves(b) else math.nan
              for a, b in zip(new.params, ts.params, strict=True)]
    np.testing.assert_allclose(m["layer_grad_norms"], want_g, rtol=1e-6)
    np.testing.assert_allclose(m["layer_update_ratios"], want_r, rtol=1e-6)
    assert want_g[1] == 0 and math.isnan(float(m["layer_update_ratios"][1]))  # the Relu: no parameters
    assert "layer_grad_norms" not in jax.jit(train_step(net, CE, opt))(ts, x, y)[1]


@pytest.mark.parametrize("fused", [True, False])
def test_fit_record_every(batch, fused):
    x, y = batch
    opt = optim.sgd(0.1)
    _, h = fit(RELU_NET, CE, opt, (x, y), epochs=3, batch_size=8, key=0, callbacks=[StepRecorder(5)],
               fused=fused)
    steps = [r["step"] for r in h.steps]
    assert steps == [1, 5, 10, 15, 20]  # 8 steps per epoch, 24 in all
    assert [r["epoch"] for r in h.steps] == [1, 1, 2, 2, 3]
    assert h.layer_names == ["[0] Dense(16)", "[2] Dense(3)"]  # the Relu has no parameters
    for r in h.steps:
        assert len(r["layer_grad_norms"]) == len(r["layer_update_ratios"]) == 2
        np.testing.assert_allclose(math.hypot(*r["layer_grad_norms"]), r["grad_norm"], rtol=1e-5)
        # plain SGD: ‖Δθ‖ = lr · ‖g‖ per layer, so the ratio times ‖θ‖ over ‖g‖ is the learning rate
        assert all(0 < v < 1 for v in r["layer_update_ratios"])
    _, every1 = fit(RELU_NET, CE, opt, (x, y), epochs=1, batch_size=8, key=0, callbacks=[StepRecorder(1)],
                    fused=fused)
    assert len(every1.steps) == 8
    np.testing.assert_allclose(np.mean([r["loss"] for r in every1.steps]), every1.train_loss[0], rtol=1e-5)
    np.testing.assert_allclose(every1.steps[0]["loss"], h.steps[0]["loss"], rtol=1e-6)
    assert fit(RELU_NET, CE, opt, (x, y), epochs=1, batch_size=8, key=0)[1].steps == []


def test_fit_record_every_fused_equals_per_step(batch):
    x, y = batch
    runs = [fit(RELU_NET, CE, optim.adam(1e-2), (x, y), epochs=2, batch_size=16, key=1, callbacks=[StepRecorder(2)],
                fused=f)[1].steps for f in (True, False)]
    np.testing.assert_equal(runs[0], runs[1])  # NaN where a statistic does not apply, in both


def test_fit_record_every_exploding(batch, tmp_path):
    # A linear net on a squared error with a far too large step: geometric divergence to Inf/NaN.
    x, y = batch
    net, target = serial(Dense(16), Dense(C)), jax.nn.one_hot(y, C, dtype=jnp.float32)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        _, h = fit(net, losses.mse, optim.sgd(1.0), (x * 10, target), epochs=3, batch_size=8, key=0,
                   callbacks=[StepRecorder(1)])
    last = h.steps[-1]
    assert not math.isfinite(last["loss"]) or not math.isfinite(last["grad_norm"])  # kept up to the bad step
    assert all(math.isfinite(r["grad_norm"]) for r in h.steps[:-1])
    v = diagnostics.detect_exploding(h)
    assert v.detected and "non-finite" in v.message
    path = plot_grad_norms(h, tmp_path / "steps.png")
    assert path.stat().st_size > 10_000
    h.save_steps_jsonl(tmp_path / "steps.jsonl")
    rows = [json.loads(line) for line in open(tmp_path / "steps.jsonl", encoding="utf-8")]
    assert [r["step"] for r in rows] == [r["step"] for r in h.steps]
    assert list(rows[0]["layer_grad_norms"]) == h.layer_names == ["[0] Dense(16)", "[1] Dense(3)"]
    assert rows[-1]["loss"] is None or rows[-1]["grad_norm"] is None  # NaN/Inf written as null


def test_fit_record_every_errors(batch, tmp_path):
    x, y = batch
    with pytest.raises(ValueError, match="StepRecorder: every must be a positive int, got 0"):
        StepRecorder(0)
    _, h = fit(RELU_NET, CE, optim.sgd(0.1), (x, y), epochs=1, batch_size=8, key=0)
    with pytest.raises(ValueError, match="no per-step records; train with fit"):
        plot_grad_norms(h, tmp_path / "x.png")


def test_fit_record_every_activation_statistics(batch):
    # One batch per epoch (the whole set): step 1's statistics are those of the initial
    # parameters on all 64 examples, whatever the shuffle; check them against a plain forward pass.
    x, y = batch
    net = serial(Dense(16), Relu(), Dense(16), Tanh(), Dense(16), Sigmoid(), Dense(C))
    opt = optim.sgd(0.1)
    ts0 = init_train_state(net, opt, (D,), key=jax.random.key(0))
    _, h = fit(net, CE, opt, (x, y), epochs=3, batch_size=64, key=0, callbacks=[StepRecorder(2)],
               train_state=ts0)
    assert [r["step"] for r in h.steps] == [1, 2]
    assert h.activation_names == ["[0] Dense(16)", "[1] Relu", "[2] Dense(16)", "[3] Tanh", "[4] Dense(16)",
                                  "[5] Sigmoid", "[6] Dense(3)"]
    first, want = h.steps[0], []
    a = x
    for layer, p in zip(diagnostics.sublayers(net), ts0.params, strict=True):
        a, _ = layer.apply(p, {}, a)
        want.append(np.asarray(a, np.float64))
    np.testing.assert_allclose(first["act_mean"], [w.mean() for w in want], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first["act_std"], [w.std() for w in want], rtol=1e-4)
    dead = np.mean(np.all(want[1] == 0, axis=0))
    np.testing.assert_allclose(first["dead_fraction"][1], dead)
    assert all(math.isnan(first["dead_fraction"][i]) for i in (0, 2, 3, 4, 5, 6))  # ReLU only
    np.testing.assert_allclose(first["saturated_fraction"][3], np.mean(np.abs(want[3]) > 0.99))
    np.testing.assert_allclose(first["saturated_fraction"][5], np.mean((want[5] < 0.01) | (want[5] > 0.99)))
    assert [i for i, v in enumerate(first["saturated_fraction"]) if not math.isnan(v)] == [3, 5]
    assert not diagnostics.detect_dead_units(h).detected and not diagnostics.detect_saturation(h).detected


def test_fit_record_every_sees_dead_relus(batch):
    # Biases of -3 on standard-normal inputs through small weights: most ReLU units never fire.
    x, y = batch
    net = serial(Dense(32, w_init=init.normal(0.1), b_init=init.constant(-3.0)), Relu(), Dense(C))
    _, h = fit(net, CE, optim.sgd(0.01), (x, y), epochs=1, batch_size=16, key=0, callbacks=[StepRecorder(1)])
    dead = [r["dead_fraction"][1] for r in h.steps]
    assert len(dead) == 4 and all(d > 0.9 for d in dead), dead
    v = diagnostics.detect_dead_units(h)
    assert v.detected and "[1] Relu" in v.message
    healthy = fit(RELU_NET, CE, optim.sgd(0.01), (x, y), epochs=1, batch_size=16, key=0,
                  callbacks=[StepRecorder(1)])[1]
    assert not diagnostics.detect_dead_units(healthy).detected


# ----------------------------------------------------------------------------------------
# grad_mode: "auto" by default, the gradient fit uses


def test_layer_report_default_grad_mode_is_auto(batch):
    from fnn.backprop import resolve_grad_mode

    x, y = batch
    _, params, state = RELU_NET.init(jax.random.key(0), (D,))
    default = diagnostics.layer_report(RELU_NET, CE, params, state, x, y)
    resolved = diagnostics.layer_report(RELU_NET, CE, params, state, x, y, grad_mode=resolve_grad_mode("auto"))
    assert [s.grad_norm for s in default.layers] == [s.grad_norm for s in resolved.layers]
    assert default.loss == resolved.loss
    for fn in (lambda: diagnostics.layer_report(RELU_NET, CE, params, state, x, y, grad_mode="numeric"),
               lambda: diagnostics.recorder(RELU_NET, CE, x, y, grad_mode="numeric")):
        with pytest.raises(ValueError, match=r"grad_mode must be one of \['auto', 'manual', 'autodiff'"):
            fn()


def test_layers_are_read_from_children_not_closures(batch):
    """A serial-like model whose closure holds no tuple of layers (the variable inside serial
    renamed, or the layers held elsewhere) is still reported layer by layer: diagnostics read
    ``children`` and ``kind``."""
    inner = serial(Dense(16), Relu(), Dense(C))
    holder = {"layers": inner}  # nothing in the new closures is a tuple of Layers

    def init(key, shape):
        return holder["layers"].init(key, shape)

    def apply(params, state, x, *, key=None, train=False):
        return holder["layers"].apply(params, state, x, key=key, train=train)

    model = Layer("renamed", init, apply, inner.backward, inner.fwd, inner.bwd, inner.children, inner.kind)
    assert diagnostics.sublayers(model) == inner.children
    rep, _ = report_of(model, batch)
    assert [s.name for s in rep.layers] == ["Dense(16)", "Relu", f"Dense({C})"]
    assert rep.layers[1].kind == "relu" and rep.layers[1].dead_fraction is not None
    names, _ = diagnostics.activation_probe(model)
    assert names == ["[0] Dense(16)", "[1] Relu", f"[2] Dense({C})"]
    # A four-field layer is a leaf of unknown kind: one entry, no structure guessed.
    plain = Layer("plain", inner.init, inner.apply, inner.backward)
    assert diagnostics.sublayers(plain) is None and diagnostics.activation_probe(plain)[0] == ["plain"]
