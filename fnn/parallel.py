"""Data-parallel training over a ``jax.sharding.Mesh``: one host with many devices, or many hosts.

``fit(..., mesh=mesh, batch_axis="data")`` splits every batch along its example axis over the
mesh axis ``batch_axis`` and keeps one full copy of the parameters, the model state and the
optimizer state on every device. There is no ``pmap`` and no ``shard_map``: the training
programs are ``jax.jit``-compiled with input and output shardings (``NamedSharding``), the
batches get a sharding constraint, and XLA's SPMD partitioner inserts the all-reduce that sums
the per-device gradients. Every step therefore computes the same numbers as on one device
(the mean over the whole batch), up to the order of floating-point sums::

    mesh = fnn.parallel.data_mesh()                  # every device, one axis named "data"
    ts, history = fit(model, loss, opt, (x, y), epochs=2, batch_size=256, key=key, mesh=mesh)

What goes where (``DataParallel`` holds the three shardings):

- params, state, optimizer state, key, step: replicated, ``NamedSharding(mesh, P())``;
- one batch ``(B, ...)``: ``P(batch_axis)``, B / mesh.shape[batch_axis] examples per device;
- the fused epoch's batch indices ``(steps, B)``: ``P(None, batch_axis)``, split along the
  batch dimension (dim 1), so every scan step gathers its examples spread over all devices;
- the training set of the fused epoch: replicated. Each device gathers its own slice of each
  batch from its copy, so no example moves between devices. Data that does not fit on one
  device goes through ``fit(..., fused=False)``, which places one batch at a time, split.

BatchNorm sees the statistics of the whole batch (the partitioner reduces across devices),
and dropout draws the same mask as on one device: the result does not depend on the number
of devices. ``batch_size`` must be a multiple of the mesh axis size (``ValueError`` if not).
The validation pass (``evaluate``) is not split: it runs with the replicated parameters, the
whole validation set on every device.

Meshes and axis types
---------------------
JAX meshes carry an axis type per axis. ``jax.make_mesh`` makes ``Explicit`` axes by default in
current JAX (sharding in types: every operation whose output sharding is ambiguous, such as a
contraction over the sharded batch axis in a hand-written ``x.T @ dy``, then needs an explicit
``out_sharding``). fnn's layers are written for the compiler-chosen (``Auto``) mode, so
``data_parallel`` converts any mesh to the same devices and axis names with every axis
``Auto`` (``as_auto_mesh``); ``data_mesh`` builds Auto meshes directly. A user mesh with
``Explicit`` axes is accepted, and arrays come back sharded over its Auto twin. ``fit`` runs
under ``jax.set_mesh`` of that Auto mesh (``with_mesh_context``), so it also works inside a
caller's ``with jax.set_mesh(explicit_mesh):`` block (arrays made there, such as the key, are
moved to the twin). Other mesh axes (for example a "model" axis of a 2-D mesh) are ignored by
data parallelism: parameters are replicated over them too, so only ``batch_axis`` (a name or a
tuple of names) splits work.

Many hosts
----------
JAX is multi-controller: one Python process per host (or per accelerator group) runs the same
script, each driving its local devices, and the compiled programs' collectives connect them.

1. Before any other JAX call, every process calls
   ``fnn.parallel.initialize("10.0.0.1:12345", num_processes=P, process_id=i)``, a thin wrapper
   of ``jax.distributed.initialize`` (on Slurm, Open MPI or Cloud TPU the arguments can be left
   out and are detected). ``jax.devices()`` then lists the devices of every process and
   ``data_mesh()`` spans them all; ``jax.local_devices()`` are this process's own.
2. Every process calls ``fit`` with the same arguments: the same key (so the same initial
   parameters and the same shuffles) and the same full training set, each host loading the same
   files. The fused epoch places the data replicated; the per-step mode
   (``fused=False``) builds each global batch with ``jax.make_array_from_callback``, each
   process supplying only the rows that live on its own devices (``DataParallel.put_batch``).
3. Data too large for every host to hold: write your own loop around ``train_step``, where each
   process loads its own shard of every batch and ``DataParallel.from_process_local`` (that is,
   ``jax.make_array_from_process_local_data``) assembles the global batch; jit the step with
   ``DataParallel.jit_step``.
4. Everything ``fit`` returns is replicated, so every process can read it (``np.asarray``). Give
   each process its own ``checkpoint_dir`` (e.g. ``f"run/p{jax.process_index()}"``), or a
   shared file system sees several processes write the same file.

On CPU the cross-process collectives use gloo (the default of ``jax_cpu_collectives_implementation``
in current JAX); ``tests/test_parallel.py`` runs two processes with four CPU devices each over
127.0.0.1 and checks them against a one-process run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fnn._compile import jit

__all__ = ["DataParallel", "as_auto_mesh", "data_mesh", "data_parallel", "initialize", "with_mesh_context"]

_AxisType = getattr(jax.sharding, "AxisType", None)  # absent in JAX releases before sharding-in-types


def _mesh_scope(mesh: Mesh):
    """``jax.set_mesh(mesh)`` as a context manager (a no-op on JAX releases without it)."""
    set_mesh = getattr(jax, "set_mesh", None)
    return set_mesh(mesh) if set_mesh is not None else contextlib.nullcontext()


def _abstract_mesh_scope(mesh: Mesh):
    """Trace under `mesh`'s abstract mesh (a no-op on JAX releases without sharding in types)."""
    use = getattr(jax.sharding, "use_abstract_mesh", None)
    abstract = getattr(mesh, "abstract_mesh", None)
    return use(abstract) if use is not None and abstract is not None else contextlib.nullcontext()


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, **kwargs: Any) -> None:
    """Join a multi-process JAX job: ``jax.distributed.initialize`` with the same arguments.

    Call it first thing in every process, before anything touches a device.

    Args:
      coordinator_address: "host:port" of process 0, which runs the coordinator service.
      num_processes: the number of processes in the job.
      process_id: this process's index in [0, num_processes).
      **kwargs: passed through (``local_device_ids``, ``initialization_timeout``, ...).
    """
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)


def as_auto_mesh(mesh: Mesh) -> Mesh:
    """The same devices and axis names with every axis type ``Auto`` (the mesh itself if it is)."""
    if not isinstance(mesh, Mesh):
        raise ValueError(f"as_auto_mesh: expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if _AxisType is None:
        return mesh
    types = tuple(getattr(mesh, "axis_types", ()) or ())
    if types and all(t == _AxisType.Auto for t in types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(_AxisType.Auto,) * len(mesh.axis_names))


def data_mesh(num_devices: int | None = None, axis: str = "data", *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with ``Auto`` axis type over the first `num_devices` devices.

    Args:
      num_devices: how many devices to use (default: all of them).
      axis: the axis name, the ``batch_axis`` to give ``fit``.
      devices: the devices to choose from (default ``jax.devices()``: every process's devices
        after ``initialize``).

    Raises:
      ValueError: `num_devices` is not a positive int or exceeds the devices available.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices) if num_devices is None else num_devices
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(devices):
        raise ValueError(f"data_mesh: num_devices must be an int in [1, {len(devices)}] (the devices "
                         f"available), got {num_devices!r}")
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"data_mesh: axis must be a non-empty string, got {axis!r}")
    kwargs = {"axis_types": (_AxisType.Auto,)} if _AxisType is not None else {}
    return Mesh(np.asarray(devices[:int(n)], dtype=object), (axis,), **kwargs)


class DataParallel(NamedTuple):
    """A mesh (Auto axes) and the axis that splits batches, with the shardings fit uses.

    Make one with ``data_parallel(mesh, batch_axis)``. Hashable, so compiled programs can be
    cached per (mesh, axis).
    """

    mesh: Mesh
    batch_axis: str | tuple[str, ...]

    @property
    def size(self) -> int:
        """The number of shards of a batch: the size of `batch_axis` (the product over a tuple)."""
        axes = (self.batch_axis,) if isinstance(self.batch_axis, str) else self.batch_axis
        return int(np.prod([self.mesh.shape[a] for a in axes]))

    @property
    def replicated(self) -> NamedSharding:
        """``P()``: a full copy on every device (params, state, optimizer state, scalars)."""
        return NamedSharding(self.mesh, P())

    @property
    def batch(self) -> NamedSharding:
        """``P(batch_axis)``: a (B, ...) batch split along B."""
        return NamedSharding(self.mesh, P(self.batch_axis))

    @property
    def stacked(self) -> NamedSharding:
        """``P(None, batch_axis)``: (steps, B, ...) batches split along B, not along steps."""
        return NamedSharding(self.mesh, P(None, self.batch_axis))

    def replicate(self, tree: Any) -> Any:
        """Place every leaf of `tree` (arrays, typed PRNG keys) replicated over the mesh.

        With several processes, each must pass the same values (same key, same data).
        """
        return jax.device_put(tree, self.replicated)

    def put_batch(self, tree: Any) -> Any:
        """Host (B, ...) arrays (every leaf) -> global arrays split along B over the mesh.

        Every process passes the same full batch; each one copies only the rows of its own
        devices (``jax.make_array_from_callback``), so this also works across hosts.
        """
        def put(a):
            a = np.asarray(a)
            return jax.make_array_from_callback(a.shape, self.batch, lambda index: a[index])
        return jax.tree.map(put, tree)

    def from_process_local(self, tree: Any) -> Any:
        """Each process's own rows -> global (B, ...) arrays split along B.

        ``jax.make_array_from_process_local_data``: with P processes of equal device counts,
        each passes B / P rows, in process order (process 0 holds the first rows).
        """
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(self.batch, np.asarray(a)), tree)

    def constrain_batch(self, tree: Any) -> Any:
        """Inside ``jit``: split every (B, ...) leaf along B (``with_sharding_constraint``)."""
        return jax.lax.with_sharding_constraint(tree, self.batch)

    def constrain_stacked(self, tree: Any) -> Any:
        """Inside ``jit``: split every (steps, B, ...) leaf (stacked batches or their indices) along B, dim 1."""
        return jax.lax.with_sharding_constraint(tree, self.stacked)

    def constrain_replicated(self, tree: Any) -> Any:
        """Inside ``jit``: keep every leaf whole on every device."""
        return jax.lax.with_sharding_constraint(tree, self.replicated)

    def wrap_step(self, step: Callable) -> Callable:
        """``step(ts, x, y, mask, lr_scale)`` with the batch split and the new TrainState replicated.

        The constraint on the result keeps the partitioner from leaving the parameters sharded
        (the gradient is all-reduced, and every device applies the same update).
        """
        def sharded_step(ts, x, y, mask=None, lr_scale=1.0):
            x, y = self.constrain_batch((x, y))
            if mask is not None:
                mask = self.constrain_batch(mask)
            ts, metrics = step(ts, x, y, mask, lr_scale)
            return self.constrain_replicated(ts), self.constrain_replicated(metrics)
        return sharded_step

    def _jit(self, fn: Callable, in_shardings: tuple, donate: bool) -> Callable:
        """jit with these input shardings, every output replicated, argument 0 donated.

        `fn` traces under this (Auto) mesh, whatever mesh the caller set with ``jax.set_mesh``.
        """
        def run(*args):
            with _abstract_mesh_scope(self.mesh):
                return fn(*args)
        return jit(run, in_shardings=in_shardings, out_shardings=self.replicated,
                       donate_argnums=(0,) if donate else ())

    def jit_step(self, step: Callable, *, donate: bool = True) -> Callable:
        """``jax.jit`` of ``step(ts, x, y, mask, lr_scale)`` (from ``fnn.train.train_step``) for this mesh.

        ts and lr_scale replicated, x, y and mask split along the batch; returns (ts, metrics)
        replicated, ts donated. Pass global arrays (``put_batch``, ``from_process_local``,
        ``replicate``); mask may be None.
        """
        rep, bat = self.replicated, self.batch
        return self._jit(self.wrap_step(step), (rep, bat, bat, bat, rep), donate)

    def jit_epoch(self, epoch_fn: Callable) -> Callable:
        """``jax.jit`` of ``fit``'s fused epoch ``(ts, x, y, lr_scale) -> (ts, sums, steps)``, all replicated."""
        return self._jit(epoch_fn, (self.replicated,) * 4, True)

    def jit_carry_step(self, step_fn: Callable) -> Callable:
        """``jax.jit`` of ``fit``'s per-step ``((ts, sums), (x, y, mask), lr_scale) -> ((ts, sums), step)``."""
        return self._jit(step_fn, (self.replicated, self.batch, self.replicated), True)


def with_mesh_context(fn: Callable) -> Callable:
    """Decorate a function with a ``mesh=`` keyword (``fit``) to run under that mesh's Auto twin.

    Inside ``jax.set_mesh(explicit_mesh)`` every jitted function traces against the context
    mesh, which must match the mesh of the arrays it gets: this sets the Auto mesh that fit's
    arrays live on for the duration of the call. Without a mesh, `fn` runs as is.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        mesh = kwargs.get("mesh")
        if not isinstance(mesh, Mesh):  # None, or a mistake for data_parallel to report
            return fn(*args, **kwargs)
        # Arrays made inside the caller's jax.set_mesh(explicit) carry that mesh: move them to its twin.
        args, kwargs = _on_auto_meshes((args, {k: v for k, v in kwargs.items() if k != "mesh"}))
        with _mesh_scope(as_auto_mesh(mesh)):
            return fn(*args, mesh=mesh, **kwargs)
    return wrapper


def _on_explicit_mesh(a: Any) -> bool:
    if not isinstance(a, jax.Array) or not isinstance(a.sharding, NamedSharding) or _AxisType is None:
        return False
    return any(t != _AxisType.Auto for t in getattr(a.sharding.mesh, "axis_types", ()))


def _on_auto_meshes(tree: Any) -> Any:
    """Re-place the arrays of `tree` that live on a mesh with non-Auto axes onto its Auto twin."""
    if not any(_on_explicit_mesh(a) for a in jax.tree.leaves(tree)):
        return tree

    def move(a):
        if not _on_explicit_mesh(a):
            return a
        return jax.device_put(a, NamedSharding(as_auto_mesh(a.sharding.mesh), a.sharding.spec))
    return jax.tree.map(move, tree)


def data_parallel(mesh: Mesh, batch_axis: str | Sequence[str] = "data", *, batch_size: int | None = None,
                  where: str = "data_parallel") -> DataParallel:
    """Check a mesh and a batch axis (and a batch size) and bundle them as a ``DataParallel``.

    The mesh is converted to ``Auto`` axes (``as_auto_mesh``, see the module docstring).

    Args:
      mesh: a ``jax.sharding.Mesh`` (``data_mesh()``, ``jax.make_mesh``, or built by hand).
      batch_axis: the mesh axis name (or tuple of names) that splits batches.
      batch_size: if given, checked to be a multiple of that axis's size.
      where: the function name for error messages ("fit").

    Raises:
      ValueError: not a Mesh, an unknown axis, or a batch size the axis does not divide.
    """
    if not isinstance(mesh, Mesh):
        raise ValueError(f"{where}: mesh must be a jax.sharding.Mesh (e.g. fnn.parallel.data_mesh()), "
                         f"got {type(mesh).__name__}")
    axes = (batch_axis,) if isinstance(batch_axis, str) else tuple(batch_axis)
    unknown = [a for a in axes if a not in mesh.axis_names]
    if not axes or unknown:
        raise ValueError(f"{where}: batch_axis {batch_axis!r} is not an axis of the mesh, whose axes are "
                         f"{list(mesh.axis_names)}")
    dp = DataParallel(as_auto_mesh(mesh), batch_axis if isinstance(batch_axis, str) else axes)
    if batch_size is not None and batch_size % dp.size:
        raise ValueError(f"{where}: batch_size={batch_size} must be a multiple of the mesh axis "
                         f"{batch_axis!r} of size {dp.size}, so that every device gets the same number of "
                         f"examples (e.g. batch_size={max(dp.size, batch_size // dp.size * dp.size)})")
    return dp
