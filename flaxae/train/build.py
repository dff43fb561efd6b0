"""What a config trains with: the mesh, model, objective, optimizer, the
state's initialiser and sharded shapes, the pure step and the jitted chunk of
steps. Nothing is compiled here; :mod:`flaxae.train.loop` runs it and
:func:`flaxae.train.restore.restore_state` rebuilds the state's shapes to load
a checkpoint into.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flaxae import objectives
from flaxae.config import Config
from flaxae.models import Autoencoder, build_model
from flaxae.objectives import contractive
from flaxae.train import parallel
from flaxae.train.optimizer import make_optimizer
from flaxae.train.state import TrainState, create_state
from flaxae.train.step import micro_batches, train_step


def build(cfg: Config, feature_shape: tuple[int, ...], steps_per_epoch: int,
          mesh: jax.sharding.Mesh):
  """Model, objective, optimizer and a sharded abstract state."""
  matmuls = parallel.model_matmuls(cfg.train.cpu_matmuls, mesh, cfg.train.strategy,
                                   cfg.train.num_seeds)
  model = build_model(cfg.model, feature_shape, dtype=cfg.train.compute_dtype,
                      conv_impl=cfg.train.conv_impl, matmuls=matmuls)
  objective = objectives.get(cfg.model.kind)
  tx = make_optimizer(cfg.train, steps_per_epoch * cfg.train.epochs)
  example = np.zeros((1, *feature_shape), np.float32)
  seed, num_seeds = cfg.train.seed, cfg.train.num_seeds
  if num_seeds == 1:
    init = functools.partial(create_state, model, tx, example, seed)
  else:  # One state per seed, stacked on a leading axis.
    init = lambda: jax.vmap(lambda s: create_state(model, tx, example, s))(
        seed + jnp.arange(num_seeds))
  sharding = parallel.replicated(mesh) if num_seeds == 1 else parallel.seed_sharded(mesh)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      jax.eval_shape(init))
  return model, objective, tx, init, abstract


class Setup(NamedTuple):
  """A run's devices, model, optimizer, pure step and jitted epoch chunk."""

  mesh: jax.sharding.Mesh
  model: Autoencoder
  objective: Any
  tx: Any
  init: Callable[[], TrainState]  # Jit it with ``state_sharding`` to get the state.
  abstract: TrainState  # Shapes, dtypes and shardings of the state.
  state_sharding: Any
  step_fn: Callable  # ``(state, batch) -> (state, metrics)``.
  chunk: Callable  # See :func:`parallel.make_train_chunk`.


def setup(cfg: Config, feature_shape: tuple[int, ...], num_examples: int) -> Setup:
  """Everything ``cfg`` trains with on ``num_examples`` resident examples.

  The mesh holds ``train.num_devices`` devices split for ``train.num_seeds``
  models; the batch is checked against both. Nothing is compiled yet.
  """
  mesh = parallel.make_mesh(cfg.train.num_devices, cfg.train.num_seeds)
  batch_size = cfg.train.batch_size
  parallel.check_batch(batch_size, mesh, num_examples)
  model, objective, tx, init, abstract = build(
      cfg, feature_shape, num_examples // batch_size, mesh)
  # Settings the step would refuse only once traced, refused here (before the
  # run directory is written): the micro-batches of a step's own batch (a
  # device's shard under shard_map), and the contractive penalty's method.
  per_step = (batch_size // mesh.shape[parallel.DATA_AXIS]
              if cfg.train.strategy == "shard_map" else batch_size)
  micro_batches(per_step, cfg.train.micro_batch_size, cfg.model)
  if cfg.model.kind == "contractive":
    contractive.resolve_method(model, cfg.model.jacobian)
  state_sharding = jax.tree.map(lambda x: x.sharding, abstract)
  step_fn = functools.partial(train_step, model=model, objective=objective, tx=tx,
                              cfg=cfg.model, micro_batch_size=cfg.train.micro_batch_size)
  chunk = parallel.make_train_chunk(
      step_fn, mesh, cfg.train.strategy, batch_size=batch_size,
      num_examples=num_examples, state_sharding=state_sharding,
      num_seeds=cfg.train.num_seeds, seeds_vmapped=cfg.train.seeds_vmapped,
      cpu_matmuls=cfg.train.cpu_matmuls)
  return Setup(mesh, model, objective, tx, init, abstract, state_sharding, step_fn, chunk)

