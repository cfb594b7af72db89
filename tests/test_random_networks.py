"""Generated networks, not fixed tables: random ``serial`` networks of Conv (1-3-D, every padding,
zeros/edge, strides, dilation), overlapping Max/Min/AvgPool, BatchNorm, Dropout, Residual, Shared,
Flatten, Dense and Maxout, under every loss of fnn.losses. The manual gradient must equal
autodiff in float64 (and central finite differences on a quarter of the examples)."""

import jax
import numpy as np
from conftest import FD_RTOL, RTOL64
from hypothesis import given, note
from strategies import random_networks, triplet_networks

from fnn.gradcheck import check_model


def random_params_state(case):
    """Non-trivial params and state for case.model: random weights, biases, BatchNorm scale and
    shift, and random running statistics (var > 0), from the shapes of init (nothing compiled)."""
    params, state = jax.eval_shape(lambda k: case.model.init(k, case.input_shape)[1:], jax.random.key(0))
    rng = np.random.default_rng(case.seed)

    def leaf(path, s):
        name = getattr(path[-1], "key", None)
        z = rng.standard_normal(s.shape)
        if name == "w":
            z = z / np.sqrt(max(1, z.size // s.shape[-1]))
        elif name == "scale":
            z = 1 + 0.5 * z
        elif name == "var":
            z = np.exp(z)
        elif name != "mean":
            z = 0.5 * z
        return z.astype(s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, params), jax.tree_util.tree_map_with_path(leaf, state)


def random_target(case, rng):
    n, kind = case.batch, case.target_kind
    if kind == "triplet":
        return None
    if kind.endswith("/int"):
        return rng.integers(0, case.extra["out_shape"][-1], n)
    shape = (n, *case.extra["out_shape"])
    if kind.endswith("/prob"):
        if rng.random() < 0.5:
            return np.eye(shape[-1])[rng.integers(0, shape[-1], n)]
        e = np.exp(rng.standard_normal(shape))
        return e / e.sum(-1, keepdims=True)
    if "binary" in kind:
        return rng.uniform(0, 1, shape) if rng.random() < 0.5 else (rng.random(shape) < 0.5).astype(np.float64)
    return rng.standard_normal(shape)


def random_input(case, rng):
    x = rng.standard_normal((case.batch, *case.input_shape))
    if case.target_kind != "triplet":
        return x
    pos_noise, neg_noise = case.extra["pos/neg noise"]
    return (x, x + pos_noise * rng.standard_normal(x.shape), x + neg_noise * rng.standard_normal(x.shape))


def check(case):
    note("layers:\n  " + "\n  ".join(case.names))
    rng = np.random.default_rng(case.seed + 1)
    params, state = random_params_state(case)
    x, target = random_input(case, rng), random_target(case, rng)
    report = check_model(case.model, case.loss, case.input_shape, target, key=jax.random.key(case.seed),
                         batch_size=case.batch, train=case.train, x=x, params=params, state=state,
                         rtol=RTOL64, fd=case.fd, fd_rtol=FD_RTOL, fd_directions=1)
    note(f"vjp rel err {report.vjp_rel_err:.2e}, fd rel err {report.fd_rel_err:.2e}")


@given(case=random_networks(train=True))
def test_random_network_in_training_mode(case):
    """BatchNorm on batch statistics, Dropout masks from the key, every non-triplet loss head."""
    check(case)


@given(case=random_networks(train=False, need_bn=True))
def test_random_network_in_eval_mode_with_random_running_statistics(case):
    """Every network holds a BatchNorm, normalizing with random running mean and var (not 0 and 1)."""
    check(case)


@given(case=triplet_networks())
def test_random_embedding_net_shared_by_a_triplet(case):
    """Anchor, positive and negative through one Shared net: its gradient sums the three uses."""
    check(case)
