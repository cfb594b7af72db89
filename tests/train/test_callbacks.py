"""fnn.train.callbacks, each on its own: the events a callback sees, NanGuard, LearningRateLog,
StepRecorder, Progress, Checkpoint contents, and that the new spellings equal the 0.1 keywords
bit for bit (tests/test_controllers.py tests the controllers' effect on the parameters)."""

import io
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import assert_trees_equal as assert_same

from fnn import checkpoint, losses, optim
from fnn.layers import Dense, Dropout, Relu, serial
from fnn.train import (
    CHECKPOINT_NAME,
    Callback,
    Checkpoint,
    EarlyStopping,
    LearningRateLog,
    NanGuard,
    Progress,
    ReduceLROnPlateau,
    StepRecorder,
    fit,
)

CE = losses.softmax_cross_entropy
MLP = serial(Dense(8), Relu(), Dropout(0.1), Dense(3))
SGD = optim.sgd(0.1)


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    return x, y


DATA, VAL = _data(), _data(48, 1)




def run(epochs=3, **kw):
    kw = {"batch_size": 32, "key": jax.random.key(0), **kw}
    return fit(kw.pop("model", MLP), CE, kw.pop("optimizer", SGD), DATA, epochs=epochs, **kw)


class Events(Callback):
    """Records the events it sees, with the epoch and the TrainState's step."""

    def __init__(self, order=50):
        self.order, self.seen = order, []

    def on_fit_start(self, run):
        self.seen.append(("fit_start", run.epoch, int(run.ts.step)))

    def on_epoch_start(self, run):
        self.seen.append(("epoch_start", run.epoch, int(run.ts.step)))

    def on_step_end(self, run):
        self.seen.append(("step_end", run.epoch, None))

    def on_epoch_end(self, run):
        self.seen.append(("epoch_end", run.epoch, int(run.ts.step), dict(run.record)["epoch"]))

    def on_fit_end(self, run):
        self.seen.append(("fit_end", run.epoch, int(run.ts.step)))


@pytest.mark.parametrize("fused", [True, False])
def test_a_callback_sees_every_event_in_order(fused):
    ev = Events()
    run(epochs=2, fused=fused, callbacks=[ev])
    steps = 96 // 32
    per_epoch = [("epoch_start", e, (e - 1) * steps) for e in (1, 2)]
    expected = [("fit_start", 0, 0)]
    for e, start in zip((1, 2), per_epoch, strict=True):
        expected.append(start)
        expected += [] if fused else [("step_end", e, None)] * steps
        expected.append(("epoch_end", e, e * steps, e))
    expected.append(("fit_end", 2, 2 * steps))
    assert ev.seen == expected


def test_callbacks_run_by_order_and_a_truthy_return_stops():
    calls = []

    class Named(Callback):
        def __init__(self, name, order, stop=False):
            self.name, self.order, self.stop = name, order, stop

        def on_epoch_end(self, run):
            calls.append(self.name)
            return self.stop

    _, h = run(epochs=5, callbacks=[Named("late", 70, stop=True), Named("early", 1), Named("mid", 50)])
    assert calls == ["early", "mid", "late"] and len(h) == 1  # every callback ran, then the loop stopped

    def stop_at_two(epoch, ts, record):
        assert record["epoch"] == epoch and int(ts.step) == epoch * 3
        return epoch == 2

    _, h = run(epochs=5, callbacks=[stop_at_two])
    assert len(h) == 2 and h.stop_reason == "stopped by callback 'stop_at_two' after epoch 2"


BOOM = optim.sgd(lambda count: jnp.where(count < 3, 0.05, 1e30))  # explodes at epoch 2, step 1


@pytest.mark.parametrize("fused", [True, False])
def test_nan_guard_locates_the_operation_in_both_loops(fused):
    with pytest.warns(RuntimeWarning, match=r"epoch 2, step \d of 3.*jax.debug_nans: invalid value"):
        ts, h = run(epochs=4, optimizer=BOOM, fused=fused, callbacks=[NanGuard(locate=True)])
    assert len(h) == 1 and "jax.debug_nans" in h.stop_reason
    one, _ = run(epochs=1, optimizer=BOOM)
    assert_same(ts, one)  # the state from the end of epoch 1


def test_without_a_stopping_nan_guard_the_loop_goes_on():
    class Count(NanGuard):
        bad = 0

        def on_nonfinite(self, run):
            Count.bad += 1

    with np.errstate(all="ignore"):
        _, h = run(epochs=3, optimizer=BOOM, callbacks=[Count()])
    assert Count.bad == 2 and len(h) == 3 and h.stop_reason is None  # epochs 2 and 3 were bad


def test_learning_rate_log_fills_lr_from_the_schedule_and_the_scale():
    schedule = optim.step_decay(0.1, 0.5, 3)
    plateau = ReduceLROnPlateau(0.1, patience=0, threshold=10.0)
    _, h = run(epochs=3, optimizer=optim.sgd(schedule), callbacks=[LearningRateLog(schedule), plateau])
    scales = [1.0, 0.1, 0.01]
    assert h["lr_scale"] == pytest.approx(scales)
    # the lr in effect at each epoch's last step (global steps 3, 6, 9 -> counts 2, 5, 8)
    assert h["lr"] == pytest.approx([float(schedule(c)) * s for c, s in zip((2, 5, 8), scales, strict=True)])
    _, plain = run(epochs=1)
    assert plain["lr"] == [None]


def test_step_recorder_with_and_without_the_activation_probe():
    _, h = run(epochs=2, callbacks=[StepRecorder(2)])
    assert [r["step"] for r in h.steps] == [1, 2, 4, 6]
    assert h.layer_names == ["[0] Dense(8)", "[3] Dense(3)"] and len(h.activation_names) == 4
    assert set(h.steps[0]) >= {"loss", "grad_norm", "layer_grad_norms", "act_mean", "dead_fraction"}
    _, g = run(epochs=2, callbacks=[StepRecorder(2, probe=lambda model: ([], None))])
    assert [r["step"] for r in g.steps] == [1, 2, 4, 6] and "act_mean" not in g.steps[0]
    assert [r["grad_norm"] for r in g.steps] == [r["grad_norm"] for r in h.steps]  # the probe changes nothing
    with pytest.raises(ValueError, match="at most one StepRecorder"):
        run(epochs=1, callbacks=[StepRecorder(1), StepRecorder(2)])


def test_progress_shows_only_on_a_terminal_unless_asked(monkeypatch):
    class Tty(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    for setting, tty, shown in [(None, False, False), (None, True, True), (True, False, True), (False, True, False)]:
        err = Tty(tty)
        monkeypatch.setattr(sys, "stderr", err)
        run(epochs=1, callbacks=[Progress(setting)])
        monkeypatch.undo()
        assert ("epoch 1/1" in err.getvalue()) == shown, (setting, tty, err.getvalue())


def test_checkpoint_holds_the_state_of_every_stateful_callback(tmp_path):
    cbs = [ReduceLROnPlateau(0.5, patience=0, threshold=10.0), EarlyStopping(5), Checkpoint(tmp_path, verbose=False)]
    ts, h = run(epochs=2, val_data=VAL, callbacks=cbs)
    meta = checkpoint.read_metadata(tmp_path / CHECKPOINT_NAME)
    assert meta["epoch"] == 2 and meta["history"] == h.records
    assert set(meta["callbacks"]) == {"ReduceLROnPlateau", "EarlyStopping"}
    assert meta["callbacks"]["EarlyStopping"]["best_epoch"] == h.best_epoch
    like = {"train_state": ts, "callbacks": {"ReduceLROnPlateau": cbs[0].state, "EarlyStopping": ts}}
    saved = checkpoint.restore(tmp_path / CHECKPOINT_NAME, like)
    assert float(saved["callbacks"]["ReduceLROnPlateau"].scale) == 0.25  # after two reductions


def test_callbacks_reset_between_fit_calls():
    stopper, plateau = EarlyStopping(1), ReduceLROnPlateau(0.5, patience=0, threshold=10.0)
    a, ha = run(epochs=3, val_data=VAL, callbacks=[stopper, plateau])
    b, hb = run(epochs=3, val_data=VAL, callbacks=[stopper, plateau])
    assert_same(a, b)
    assert ha.records[0]["lr_scale"] == hb.records[0]["lr_scale"] == 1.0 and ha.best_epoch == hb.best_epoch


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_01_keywords_equal_their_callbacks_bit_for_bit(tmp_path):
    new = [ReduceLROnPlateau(0.5, patience=0, threshold=10.0), EarlyStopping(2), LearningRateLog(0.1),
           StepRecorder(2), Checkpoint(tmp_path / "new", verbose=False), Progress(False)]
    a, ha = run(epochs=3, val_data=VAL, callbacks=new)
    old = dict(plateau=optim.reduce_on_plateau(0.5, patience=0, threshold=10.0), early_stopping=2,
               learning_rate=0.1, record_every=2, checkpoint_dir=tmp_path / "old", progress=False)
    b, hb = run(epochs=3, val_data=VAL, **old)
    assert_same(a, b)
    untimed = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in h]
    assert untimed(ha) == untimed(hb) and repr(ha.steps) == repr(hb.steps) and ha.best_epoch == hb.best_epoch


def test_each_01_keyword_warns_and_names_its_replacement(tmp_path):
    cases = {"progress": False, "early_stopping": 1, "learning_rate": 0.1, "record_every": 3,
             "plateau": optim.reduce_on_plateau(), "checkpoint_dir": tmp_path, "eval_batch_size": 50,
             "compute_dtype": jnp.float32, "debug_nans": False, "penalty": losses.l2(1e-3)}
    for name, value in cases.items():
        with pytest.warns(DeprecationWarning, match=rf"fit\({name}=\.\.\.\) is deprecated .* use "):
            run(epochs=1, **{name: value})
    with pytest.raises(TypeError, match="unexpected keyword argument 'early_stoping'"):
        run(epochs=1, early_stoping=2)
