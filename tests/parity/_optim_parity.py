"""Shared helpers for the optimizer parity tests: random pytrees, gradient sequences, runners."""

import jax
import jax.numpy as jnp
import numpy as np

from fnn import optim

STEPS = 20
# Several shapes, nested dicts and tuples, and a scalar leaf.
SHAPES = {"w": (3, 4), "b": (4,), "deep": ({"k": (2, 2, 3)}, (5,)), "s": ()}


def _is_shape(s):
    return isinstance(s, tuple) and all(isinstance(d, int) for d in s)


def random_tree(rng, shapes=SHAPES, dtype=np.float64):
    """A pytree of standard normal arrays with the given shapes."""
    return jax.tree.map(lambda s: rng.normal(size=s).astype(dtype), shapes, is_leaf=_is_shape)


def gradient_sequence(seed, n=STEPS, shapes=SHAPES, bias=0.0):
    """n random gradient pytrees. Each step has its own overall scale (so global-norm clipping
    is active on some steps only), about 10% exact zeros (Rprop's sign-0 branch), and an optional
    fixed per-coordinate sign bias (so Rprop's steps grow into max_step)."""
    rng = np.random.default_rng(seed)
    pattern = random_tree(rng, shapes)
    pattern = jax.tree.map(lambda p: np.sign(p) * (np.abs(p) > 0.5), pattern)
    out = []
    for _ in range(n):
        scale = 10.0 ** rng.uniform(-1.5, 0.5)

        def grad_leaf(x, p, scale=scale):
            return scale * (x + bias * p) * (rng.uniform(size=np.shape(x)) > 0.1)

        out.append(jax.tree.map(grad_leaf, random_tree(rng, shapes), pattern))
    return out


def run_fnn(opt, params, grads, **extra):
    """Parameters (NumPy pytrees) after each of len(grads) jitted steps."""

    @jax.jit
    def step(params, state, g):
        updates, state = opt.update(g, state, params, **extra)
        return optim.apply_updates(params, updates), state

    params = jax.tree.map(jnp.asarray, params)
    state = opt.init(params)
    history = []
    for g in grads:
        params, state = step(params, state, jax.tree.map(jnp.asarray, g))
        history.append(jax.tree.map(np.asarray, params))
    return history


def run_torch(make_opt, params, grads, before_step=None, scheduler=None):
    """Same with a torch.optim optimizer: gradients are set as p.grad, one leaf per tensor."""
    import torch

    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
    opt = make_opt(tensors)
    sched = scheduler(opt) if scheduler is not None else None
    history = []
    for g in grads:
        for t, gl in zip(tensors, jax.tree.leaves(g), strict=True):
            t.grad = torch.tensor(np.array(gl))
        if before_step is not None:
            before_step(tensors)
        opt.step()
        if sched is not None:
            sched.step()
        history.append(jax.tree.unflatten(treedef, [t.detach().numpy().copy() for t in tensors]))
    return history


def rel_err(a, b):
    """max over leaves of max|a − b| / max(max|b|, tiny)."""
    errs = [np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300) if np.size(y) else 0.0
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    return max(errs)


def max_step_err(ours, ref):
    """The worst relative error over all steps (the histories must have equal length)."""
    assert len(ours) == len(ref)
    return max(rel_err(a, b) for a, b in zip(ours, ref, strict=True))


def moved(history, params):
    """How far the parameters moved in total (relative): guards against comparing no-ops."""
    return rel_err(history[-1], params)
