"""Hyperparameter search: grid and random search over a config space, and many configurations
trained at once with ``jax.vmap``.

A **space** is a dict from names to what each name may take:

- a ``list`` (or ``choice([...])``): these values (grid search enumerates them; random
  search picks one uniformly);
- ``loguniform(low, high)``: log-uniform in [low, high] (learning rates, weight decay);
- ``uniform_range(low, high)``: uniform in [low, high] (``uniform``, its old name, is
  deprecated: ``fnn.init.uniform`` is an initializer);
- anything else (a number, a string, a tuple): a fixed value.

``grid(space)`` and ``sample(space, num_trials, key=key)`` turn a space into a list of configs
(dicts). ``grid_search`` and ``random_search`` score each config with ``run(config)``, a
function returning a float or a dict with a ``"score"`` key, then sort the trials (a table
via ``SearchResult.table()``), write them as JSON lines, and refit the best config. The usual
``run`` trains with ``fnn.train.fit`` and scores on validation data: ``fit_objective`` builds
one.

``vmap_search`` trains K configurations that differ only in continuous hyperparameters
(learning rate and other optimizer numbers, weight decay, init scale) and in the seed AT
ONCE: one jitted, vmapped fused epoch over the K stacked TrainStates. Dropout rates cannot
vary (``Dropout`` takes its rate as a Python float at construction); neither can anything
that changes shapes (widths, batch size). The vmapped program pays off on accelerators; on
XLA:CPU it was measured slower than the same program run once per config (batched matmuls
and grouped convolutions take slower paths there), so ``vectorize=None`` picks the
sequential loop on CPU and the vmapped program elsewhere.

Config keys with a meaning of their own, the same in ``fit_objective`` and ``vmap_search``
(so one config gives the same model either way):

- ``seed``: the PRNG seed of the run (``fit(key=jax.random.key(seed))``: init, shuffles, dropout);
- ``init_scale``: every initial parameter is multiplied by it;
- ``weight_decay``: coupled L2 decay, g ← g + λ·θ before the optimizer, as
  ``optim.chain(optim.add_weight_decay(λ), make_optimizer(config))``;
- ``epochs``, ``batch_size`` (``fit_objective`` only): override the defaults.

All other keys are for ``make_model(config)`` and ``make_optimizer(config)``.

Modules: ``spaces`` (ranges, ``grid``, ``sample``, ``RESERVED``), ``trials`` (``Trial``,
``SearchResult``, sorting, JSON lines), ``runs`` (``grid_search``, ``random_search``,
``fit_objective``), ``vmap`` (``vmap_search``, ``VmapResult``) and ``reserved`` (how the
reserved keys are applied, shared by ``runs`` and ``vmap``).
"""

from fnn.search.runs import fit_objective, grid_search, random_search
from fnn.search.spaces import (
    RESERVED,
    Choice,
    LogUniform,
    Uniform,
    choice,
    grid,
    loguniform,
    sample,
    uniform_range,
)
from fnn.search.spaces import uniform as uniform  # deprecated alias of uniform_range (removed in 0.3)
from fnn.search.trials import SearchResult, Trial, load_jsonl, sort_trials
from fnn.search.vmap import VmapResult, vmap_search

__all__ = [
    "LogUniform", "Uniform", "Choice", "loguniform", "uniform_range", "choice", "grid", "sample",
    "Trial", "SearchResult", "VmapResult", "sort_trials", "load_jsonl",
    "grid_search", "random_search", "fit_objective", "vmap_search", "RESERVED",
]
