"""Data parallelism: the mesh, the shardings, and the jitted epoch chunk.

Two strategies run the same pure :func:`~flaxae.train.step.train_step`:

* ``jit``: global-view code; the batch is sharded on the mesh's ``data`` axis
  with ``NamedSharding`` and XLA inserts the gradient all-reduce.
* ``shard_map``: the per-device (pmap) programming model; each device runs the
  step on its shard and ``lax.pmean`` averages gradients explicitly.

Many steps are fused into one compiled call with ``lax.scan``. The training
set lives on the devices (replicated; as bytes when it came as bytes, see
:mod:`flaxae.data.compact`). Each epoch's order is a permutation drawn on the
host from the run key and the epoch number (:class:`EpochOrders`; XLA's
sort-based shuffle took 24 ms per 60,000 examples on a CPU, NumPy's 0.75 ms
with the transfer) and sent to the devices once per epoch, so the position in
the data order is the step counter alone.

The mesh has two axes, ``seed`` and ``data``. A single model uses ``data``
alone (``seed`` has size 1). Independent models (``train.num_seeds``) are
stacked on a leading axis sharded over ``seed``: each device group trains its
own models with no communication between groups, and each model is
data-parallel over the group's ``data`` devices.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flaxae.data import compact
from flaxae.errors import ConfigError, ShapeError
from flaxae.kernels import native

DATA_AXIS = "data"
SEED_AXIS = "seed"
_DATA_ORDER_TAG = 0x0DA7A  # Separates the data-order stream from the steps' keys.


def make_mesh(num_devices: int = 0, num_seeds: int = 1) -> Mesh:
  """A ``(seed, data)`` mesh over the first ``num_devices`` devices (0: all).

  The ``seed`` axis takes as many devices as divide both the device count and
  ``num_seeds`` (independent models need no communication, so splitting the
  models beats splitting each model's batch); ``data`` takes the rest.
  """
  devices = jax.devices()
  if num_devices > len(devices):
    raise ConfigError(
        f"train.num_devices={num_devices} but only {len(devices)} "
        f"{devices[0].platform} device(s) are available")
  devices = devices[:num_devices or len(devices)]
  seed_groups = math.gcd(num_seeds, len(devices))
  return jax.make_mesh((seed_groups, len(devices) // seed_groups), (SEED_AXIS, DATA_AXIS),
                       axis_types=(AxisType.Auto,) * 2, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def seed_sharded(mesh: Mesh) -> NamedSharding:
  """Stacked models: the leading (seed) axis split over the ``seed`` groups."""
  return NamedSharding(mesh, P(SEED_AXIS))


def put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array every process holds in full.

  Each process fills only its own devices' shards, so this works for one
  process and for many (where ``jax.device_put`` of a host array cannot
  address the other processes' devices).
  """
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def fetch(tree):
  """``tree`` readable on the host of every process.

  Arrays whose shards all live in this process come back as they are; arrays
  that span other processes' devices (the seed-split models of a multi-host
  run) are gathered from every process into NumPy arrays
  (``multihost_utils.process_allgather``, which every process must call).
  """
  if all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
    return tree
  return multihost_utils.process_allgather(tree, tiled=True)


def check_batch(batch_size: int, mesh: Mesh, num_examples: int) -> None:
  """Refuses a global batch that does not split evenly over the devices, or
  that is larger than the training set."""
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise ConfigError(
        f"batch size {batch_size} is not divisible by the number of devices "
        f"{n} that share each model; use a multiple of {n} (or set train.num_devices)")
  if batch_size > num_examples:
    raise ShapeError(
        f"batch size {batch_size} is larger than the training set "
        f"({num_examples} examples); lower train.batch_size")


def epoch_order(rng, epoch: int, num_examples: int) -> np.ndarray:
  """The permutation of the training set used in ``epoch``, drawn on the host.

  ``rng`` is one model's raw key data (``TrainState.rng``); the same key and
  epoch give the same order on every process and every run.
  """
  words = [int(w) for w in np.asarray(rng, np.uint32).ravel()]
  seq = np.random.SeedSequence([*words, _DATA_ORDER_TAG, int(epoch)])
  return np.random.default_rng(seq).permutation(num_examples).astype(np.int32)


class EpochOrders:
  """Each epoch's data order on the devices, for :func:`make_train_chunk`.

  ``orders(step)`` is the permutation of ``step``'s epoch: drawn on the host
  from the models' keys (``rng``: a state's ``rng``, ``(S, k)`` for stacked
  models) and put on the mesh once per epoch, replicated, or split over the
  ``seed`` groups with the models.
  """

  def __init__(self, rng, num_examples: int, batch_size: int, mesh: Mesh,
               num_seeds: int = 1):
    self.keys = np.asarray(jax.device_get(fetch(rng)), np.uint32).reshape(num_seeds, -1)
    self.num_examples, self.steps_per_epoch = num_examples, num_examples // batch_size
    self.sharding = order_sharding(mesh, num_seeds)
    self._epoch, self._order = None, None

  def host(self, epoch: int) -> np.ndarray:
    """Epoch ``epoch``'s order as a host array (``(S, N)`` for stacked models)."""
    orders = [epoch_order(k, epoch, self.num_examples) for k in self.keys]
    return np.stack(orders) if len(orders) > 1 else orders[0]

  def __call__(self, step: int) -> jax.Array:
    epoch = int(step) // self.steps_per_epoch
    if epoch != self._epoch:
      self._epoch, self._order = epoch, put(self.host(epoch), self.sharding)
    return self._order


def order_sharding(mesh: Mesh, num_seeds: int = 1) -> NamedSharding:
  """Where an epoch's order lives: with every device, or with its models' group."""
  return seed_sharded(mesh) if num_seeds > 1 else replicated(mesh)


def per_device_step(step_fn: Callable, mesh: Mesh, strategy: str) -> Callable:
  """``step_fn(state, batch, axis_name=...)`` as the chosen strategy runs it."""
  if strategy == "jit":
    sharding = batch_sharded(mesh)

    def step(state, batch):
      return step_fn(state, lax.with_sharding_constraint(batch, sharding))

    return step
  if strategy == "shard_map":
    # check_vma=False is pmap's model: each device differentiates its own loss
    # and the step averages gradients with an explicit lax.pmean. (With vma
    # checks on, the gradient of replicated parameters would come back already
    # summed over devices, and the pmean would be wrong.)
    def step(state, batch):
      # Inside the seed groups' shard_map the mesh in context (seed axis
      # manual) is the one to nest in.
      context = jax.sharding.get_abstract_mesh()
      return jax.shard_map(
          functools.partial(step_fn, axis_name=DATA_AXIS),
          mesh=mesh if context.empty else context,
          in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P()), check_vma=False)(state, batch)

    return step
  raise ConfigError(f"unknown train.strategy {strategy!r}; known: jit, shard_map")


def seeds_per_vmap(requested: int, num_local: int, num_groups: int = 1) -> int | None:
  """How many of a device group's ``num_local`` models one vmap trains side
  by side (``lax.map``'s ``batch_size``; None: one at a time, no vmap).

  ``requested`` 0 chooses all of them, except on CPU with several seed groups:
  those run at once on cores that share caches and memory bandwidth, and
  stacked activations then overflow them (8 dense 784-32-784 models on 2
  cores, batch 128: 1.8× the sequential runs' throughput vmapped 4 per core,
  2.0-2.1× one at a time; on a single device vmapping all 8 gained 1.25×).
  """
  if requested == 0:
    several_cpu_groups = jax.default_backend() == "cpu" and num_groups > 1
    requested = 1 if several_cpu_groups else num_local
  k = min(requested, num_local)
  return None if k == 1 else k


def compiler_options(cpu_matmuls: str = "xla") -> dict[str, str] | None:
  """XLA options for ``train.cpu_matmuls`` on this backend (None: XLA's defaults)."""
  if cpu_matmuls == "eigen" and jax.default_backend() == "cpu":
    return {"xla_cpu_experimental_ynn_fusion_type": ""}  # No YNNPACK fusions.
  return None


def model_matmuls(cpu_matmuls: str, mesh: Mesh, strategy: str, num_seeds: int = 1) -> str:
  """The model's ``matmuls`` (:func:`flaxae.models.build_model`) for
  ``train.cpu_matmuls`` on this backend and mesh: ``mkl`` only on CPU, and
  then with the kernel registered (a missing MKL or compiler is a
  :class:`~flaxae.errors.KernelError` here, before any work).

  MKL's products partition like XLA's under ``jax.jit`` and run per device
  inside ``shard_map`` (:mod:`flaxae.kernels.gemm`), except in one program:
  many seeds (a ``shard_map`` over the seed groups) whose step splits the
  batch with the jit strategy, where the partitioner would gather each
  product's operands onto every device."""
  if cpu_matmuls != "mkl" or jax.default_backend() != "cpu":
    return "xla"
  if num_seeds > 1 and strategy == "jit" and mesh.shape[DATA_AXIS] > 1:
    raise ConfigError(
        "train.cpu_matmuls=mkl with train.num_seeds > 1 and more than one data-parallel "
        "device per seed group needs train.strategy=shard_map (each device its own "
        "products): the jit strategy would gather every product's operands")
  native.register()
  return "mkl"


def make_train_chunk(step_fn: Callable, mesh: Mesh, strategy: str, *,
                     batch_size: int, num_examples: int, state_sharding,
                     num_seeds: int = 1, seeds_vmapped: int = 0,
                     cpu_matmuls: str = "xla") -> Callable:
  """A jitted ``chunk(state, data, order, length) -> (state, metrics)``.

  Runs ``length`` (static) steps from ``state.step`` with ``lax.scan``, on
  the batches that ``order`` (the epoch's permutation, :class:`EpochOrders`)
  picks from the resident ``data`` (float32 examples, or their bytes:
  :func:`flaxae.data.compact.decode`); ``metrics`` are the chunk's means.
  ``state`` is donated. With ``num_seeds > 1`` the state has a leading seed
  axis (each seed has its own data order from its own key: ``order`` is
  ``(S, N)``), split over the mesh's ``seed`` groups by a
  ``shard_map`` over that axis (the ``data`` axis stays the step's own);
  inside a group ``lax.map`` trains its models ``seeds_vmapped`` at a time
  (see :func:`seeds_per_vmap`). The steps must lie in one epoch (the loop's
  schedule ends every chunk at an epoch boundary). ``cpu_matmuls``:
  ``train.cpu_matmuls`` (:func:`compiler_options`).
  """
  check_batch(batch_size, mesh, num_examples)
  steps_per_epoch = num_examples // batch_size
  step = per_device_step(step_fn, mesh, strategy)

  def chunk(state, data, order, length):
    start = (state.step % steps_per_epoch) * batch_size

    def body(state, i):
      idx = lax.dynamic_slice(order, (start + i * batch_size,), (batch_size,))
      # Whole examples as rows (a 28×28×1 image's last axis of 1 would make
      # XLA:CPU copy it one value at a time); a permutation is in bounds:
      # "clip" spares the out-of-bounds select.
      rows = jnp.take(data.reshape(data.shape[0], -1), idx, axis=0, mode="clip")
      return step(state, compact.decode(rows.reshape(batch_size, *data.shape[1:])))

    state, metrics = lax.scan(body, state, jnp.arange(length))
    return state, jax.tree.map(jnp.mean, metrics)

  groups = mesh.shape[SEED_AXIS]
  if num_seeds % groups:
    raise ConfigError(f"train.num_seeds={num_seeds} does not split over {groups} seed groups")
  local = num_seeds // groups
  per_vmap = seeds_per_vmap(seeds_vmapped, local, groups)

  def chunks(state, data, order, length):
    if num_seeds == 1:
      return chunk(state, data, order, length)
    # Independent models stacked on a leading axis: one program trains all.
    # Each seed group gets its S/groups models and their orders (no
    # communication between groups) and the whole training set.
    def group(states, data, orders):
      return lax.map(lambda so: chunk(so[0], data, so[1], length), (states, orders),
                     batch_size=per_vmap)

    return jax.shard_map(group, mesh=mesh, in_specs=(P(SEED_AXIS), P(), P(SEED_AXIS)),
                         out_specs=P(SEED_AXIS), axis_names={SEED_AXIS},
                         check_vma=False)(state, data, order)

  return jax.jit(chunks, static_argnums=3, donate_argnums=0,
                 in_shardings=(state_sharding, replicated(mesh),
                               order_sharding(mesh, num_seeds)),
                 out_shardings=(state_sharding, replicated(mesh)),
                 compiler_options=compiler_options(cpu_matmuls))


def chunk_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a chunk of batches ``(L, B, ...)``: the batch axis is split."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def make_stream_chunk(step_fn: Callable, mesh: Mesh, strategy: str, *,
                      state_sharding, prepare: Callable | None = None,
                      cpu_matmuls: str = "xla") -> Callable:
  """A jitted ``chunk(state, batches) -> (state, metrics)`` over host-read
  batches ``(L, B, ...)``: the streaming twin of :func:`make_train_chunk`,
  running the same step on the same batches. ``prepare`` turns each batch as
  it was sent (say uint8 bytes, a quarter of float32's traffic) into the
  float32 examples, on the device."""
  step = per_device_step(step_fn, mesh, strategy)
  prepare = prepare or (lambda x: x)

  def chunk(state, batches):
    state, metrics = lax.scan(lambda s, x: step(s, prepare(x)), state, batches)
    return state, jax.tree.map(jnp.mean, metrics)

  return jax.jit(chunk, donate_argnums=0,
                 in_shardings=(state_sharding, chunk_sharding(mesh)),
                 out_shardings=(state_sharding, replicated(mesh)),
                 compiler_options=compiler_options(cpu_matmuls))


def make_eval(eval_fn: Callable, mesh: Mesh) -> Callable:
  """``eval(variables, batch, index) -> per-example figures`` for a host
  ``batch`` and its examples' positions ``index`` in the evaluated set.

  The batch is sharded over the mesh; the figures come back replicated, so
  every process can read them.
  """
  sharding = batch_sharded(mesh)
  jitted = jax.jit(eval_fn, in_shardings=(replicated(mesh), sharding, sharding),
                   out_shardings=replicated(mesh))
  return lambda variables, batch, index: jitted(variables, put(batch, sharding),
                                                put(index, sharding))


def padded_size(n: int, batch_size: int) -> int:
  """The size a batch of ``n ≤ batch_size`` examples is padded to: the next
  power of two, at most ``batch_size``. Inputs of every length then compile
  about log2(batch_size) programs, not one per length."""
  return min(batch_size, 1 << (n - 1).bit_length())


def evaluate(eval_jit: Callable, variables, x: np.ndarray, batch_size: int,
             num_devices: int, summarize: Callable[[dict], dict] | None = None) -> dict:
  """Means of ``eval_jit``'s per-example figures over all of ``x``.

  Figures of shape ``(B,)`` give floats, figures ``(B, ...)`` give arrays
  (for example code-usage histograms); ``summarize`` (if given) turns that
  dict into the reported numbers. A short last batch is padded to a power of
  two (and a multiple of the device count; the padding dropped before
  averaging), so that sets of any size compile a few programs, not one per
  size. Each example is evaluated with its position in ``x`` (which keys its
  random draws), so the figures do not depend on ``batch_size`` or
  ``num_devices``.
  """
  sums: dict[str, np.ndarray] = {}
  batch_size = max(num_devices, batch_size - batch_size % num_devices)
  for lo in range(0, len(x), batch_size):
    batch = x[lo:lo + batch_size]
    n = len(batch)
    size = padded_size(n, batch_size)
    pad = size - n + (-size) % num_devices
    if pad:
      batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
    index = np.arange(lo, lo + len(batch), dtype=np.int32)
    out = jax.device_get(eval_jit(variables, batch, index))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + np.asarray(v[:n], np.float64).sum(axis=0)
  means = {k: float(v) / len(x) if np.ndim(v) == 0 else v / len(x)
           for k, v in sums.items()}
  return summarize(means) if summarize is not None else means
