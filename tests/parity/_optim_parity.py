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


# ----------------------------------------------------------------------------------------
# Long closed-loop runs: the gradient at each step is computed from that side's own params.

LONG_STEPS = 300


def closed_loop_problem(seed, n=LONG_STEPS, shapes=SHAPES, noise=0.5, zero_frac=0.1):
    """A jax gradient oracle and its per-step data, for long runs where the gradients depend on the params.

    L_t(θ) = Σ m_t·(a/2·d² + d⁴/40), d = θ − c_t, per coordinate: curvatures a in [0.2, 3], moving
    targets c_t = c + noise·ξ_t (so the gradient stays non-trivial at every step, and the convex loss
    damps rather than amplifies rounding differences between two implementations), and masks m_t that
    zero about ``zero_frac`` of the gradient coordinates exactly (Rprop's sign-0 branch).
    Returns ``(grad_fn, data)``: ``grad_fn(params, data_t)`` is jitted, and every leaf of ``data`` has a
    leading axis of length n (``data_t`` is one slice of it).
    """
    rng = np.random.default_rng(seed)
    curvature = jax.tree.map(lambda s: rng.uniform(0.2, 3.0, size=s), shapes, is_leaf=_is_shape)
    centre = random_tree(rng, shapes)
    targets = jax.tree.map(lambda c: c + noise * rng.normal(size=(n, *np.shape(c))), centre)
    masks = jax.tree.map(lambda c: (rng.uniform(size=(n, *np.shape(c))) > zero_frac).astype(np.float64), centre)

    def loss(params, data_t):
        def leaf(x, a, c, m):
            d = x - c
            return jnp.sum(m * (0.5 * a * d * d + d ** 4 / 40.0))

        targets_t, masks_t = data_t
        return sum(jax.tree.leaves(jax.tree.map(leaf, params, curvature, targets_t, masks_t)))

    return jax.jit(jax.grad(loss)), (targets, masks)


def _slice(data, t):
    return jax.tree.map(lambda d: d[t], data)


def run_fnn_closed_loop(opt, params, grad_fn, data, **extra):
    """Parameters after each step of a closed loop (the whole run is one jitted lax.scan).
    Returns a pytree like params whose leaves have a leading axis of length n (the steps)."""

    def body(carry, data_t):
        p, state = carry
        updates, state = opt.update(grad_fn(p, data_t), state, p, **extra)
        p = optim.apply_updates(p, updates)
        return (p, state), p

    @jax.jit
    def run(p, data):
        return jax.lax.scan(body, (p, opt.init(p)), data)[1]

    return jax.tree.map(np.asarray, run(jax.tree.map(jnp.asarray, params), data))


def run_host_closed_loop(step, params, grad_fn, data):
    """The same loop for a host-side reference: ``step(leaves, grad_leaves) -> leaves`` on lists of
    NumPy arrays (it keeps its own state). Gradients come from the same jitted ``grad_fn``."""
    leaves, treedef = jax.tree.flatten(jax.tree.map(np.asarray, params))
    n = len(jax.tree.leaves(data)[0])
    history = []
    for t in range(n):
        g = grad_fn(jax.tree.unflatten(treedef, leaves), _slice(data, t))
        leaves = [np.array(x) for x in step(leaves, [np.asarray(x) for x in jax.tree.leaves(g)])]
        history.append(leaves)
    return jax.tree.unflatten(treedef, [np.stack(xs) for xs in zip(*history, strict=True)])


def run_torch_closed_loop(make_opt, params, grad_fn, data, scheduler=None):
    """A torch.optim optimizer in the closed loop: p.grad is set from ``grad_fn`` at torch's params."""
    import torch

    tensors = []

    def step(leaves, grads):
        if not tensors:
            tensors.extend(torch.tensor(x, requires_grad=True) for x in leaves)
            step.opt = make_opt(tensors)
            step.sched = scheduler(step.opt) if scheduler is not None else None
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.tensor(g)
        step.opt.step()
        if step.sched is not None:
            step.sched.step()
        return [t.detach().numpy() for t in tensors]

    return run_host_closed_loop(step, params, grad_fn, data)


def step_errors(ours, ref):
    """Per-step relative errors of two stacked histories: for each step, the max over leaves of
    max|a − b| / max(max|b|, tiny) (``rel_err`` at every step)."""
    errs = []
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        errs.append(np.max(np.abs(a - b), axis=1) / np.maximum(np.max(np.abs(b), axis=1), 1e-300))
    return np.max(np.stack(errs), axis=0)
