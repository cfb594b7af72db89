"""Fingerprint the numbers fnn's training produces, to show that a refactor keeps them bit for bit.

Runs a fixed set of short trainings on the embedded Fashion-MNIST sample (CPU, float32, fixed
keys) through the public API and prints one JSON object: a SHA-256 of every leaf of each final
TrainState (or search/diagnostics result) and of its recorded losses. Run it before and after a
change and compare the two files:

    python scripts/bitwise_check.py > before.json     # on the old commit
    python scripts/bitwise_check.py > after.json      # on the new one
    python scripts/bitwise_check.py --compare before.json after.json

Bitwise equality is the contract on XLA:CPU for the same jax/jaxlib; other backends may fuse
differently.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np


def _digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        a = np.asarray(leaf)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


def _losses(history) -> str:
    return _digest([np.asarray([np.nan if v is None else v for v in history[f]], np.float64)
                    for f in ("train_loss", "val_loss")])


def runs() -> dict[str, str]:
    from fnn import diagnostics, layers, losses, models, optim, search
    from fnn.data import Standardizer, load_sample, to_float
    from fnn.train import fit

    ds = load_sample()
    (x, y), (xt, yt) = ds.train, ds.test
    norm = Standardizer.fit(to_float(x[:512]), per="global")
    x, y = np.asarray(norm.apply(to_float(x[:512]))), np.asarray(y[:512])
    xv, yv = np.asarray(norm.apply(to_float(xt[:256]))), np.asarray(yt[:256])
    ce = losses.softmax_cross_entropy
    mlp = layers.serial(layers.Flatten(), layers.Dense(32), layers.Relu(), layers.Dropout(0.2), layers.Dense(10))
    out = {}

    def record(name, ts, history=None):
        out[name] = _digest(ts) + ("" if history is None else "/" + _losses(history))

    kw = dict(epochs=1, batch_size=64, key=jax.random.key(0), val_data=(xv, yv), progress=False)
    cnn = models.simple_cnn()
    record("simple_cnn fused auto", *fit(cnn, ce, optim.adam(1e-3), (x, y), **kw))
    record("simple_cnn per-step auto", *fit(cnn, ce, optim.adam(1e-3), (x, y), fused=False, **kw))
    record("simple_cnn fused manual", *fit(cnn, ce, optim.adam(1e-3), (x, y), grad_mode="manual", **kw))
    record("bn_cnn fused auto record_every", *fit(models.bn_cnn(), ce, optim.adam(1e-3), (x, y),
                                                   record_every=3, **kw))
    kw3 = {**kw, "epochs": 3}
    ts, h = fit(mlp, ce, optim.sgd(0.05), (x, y), grad_mode="manual", early_stopping=1,
                plateau=optim.reduce_on_plateau(factor=0.1, patience=0, threshold=10.0), **kw3)
    record("mlp manual plateau early-stopping", ts, h)
    record("mlp pad custom_vjp", *fit(mlp, ce, optim.momentum(0.05, 0.9), (x, y), remainder="pad",
                                      grad_mode="custom_vjp", **kw3))
    record("mlp autodiff penalty", *fit(mlp, ce, optim.adam(1e-3), (x, y), grad_mode="autodiff",
                                        penalty=losses.l2(1e-3), **kw))
    record("mlp bf16", *fit(mlp, ce, optim.adam(1e-3), (x, y), compute_dtype=jnp.bfloat16, **kw))
    res = search.vmap_search(mlp, ce, lambda c: optim.adam(c["learning_rate"]), (x, y),
                             [{"learning_rate": 1e-3, "seed": 0}, {"learning_rate": 3e-3, "seed": 1}],
                             epochs=1, batch_size=64, val_data=(xv, yv), progress=False)
    out["vmap_search"] = _digest([t.score for t in res.trials])
    ov = diagnostics.overfit_one_batch(mlp, ce, optim.adam(1e-2), x[:16], y[:16], key=jax.random.key(0),
                                       steps=50, grad_mode="autodiff")
    out["overfit_one_batch"] = _digest(np.asarray(ov.losses))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        a, b = (json.load(open(p)) for p in args.compare)
        bad = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        for k in sorted(set(a) | set(b)):
            print(f"{'same' if k not in bad else 'DIFF'}  {k}: {a.get(k)} -> {b.get(k)}")
        return 1 if bad else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        print(json.dumps(runs(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
