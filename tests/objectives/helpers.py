"""Small builders shared by the objective tests: digits, training, test figures."""

from __future__ import annotations

import functools

import jax
import numpy as np

from flaxae.config import Config, DataConfig, ModelConfig, TrainConfig
from flaxae.data import load_dataset
from flaxae.train import parallel
from flaxae.train.build import setup
from flaxae.train.step import eval_step, summarize_eval


# XLA's CPU compiler without its expensive LLVM passes: compiles ~40 % faster,
# and these tests compile far more than they run. The programs are the same.
FAST_COMPILE = {"xla_backend_optimization_level": 0,
                "xla_llvm_disable_expensive_passes": True}


def fast(jitted, *static):
  """``jitted(*args)`` compiled with ``FAST_COMPILE``, once per argument shapes."""
  cache = {}

  def call(*args):
    leaves, tree = jax.tree.flatten(args)
    sig = (tree, tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x))))
                       for x in leaves), static)
    if sig not in cache:
      cache[sig] = jitted.lower(*args, *static).compile(compiler_options=FAST_COMPILE)
    return cache[sig](*args)

  return call


@functools.lru_cache(maxsize=None)
def digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's 8×8 digits: ``(1438, 8, 8, 1)`` train, ``(359, 8, 8, 1)`` test."""
  ds = load_dataset(DataConfig(name="digits"), 0)
  return ds.train_x, ds.test_x


class Trainer:
  """A model, its state and its compiled chunk: ``advance(steps)`` trains on.

  Chunks of one length compile once; the chunk stays inside an epoch.
  ``state`` (a host copy of another trainer's state) replaces the initial one.
  """

  def __init__(self, model: ModelConfig, data: np.ndarray, *, batch_size: int = 64,
               learning_rate: float = 3e-3, strategy: str = "jit", num_devices: int = 1,
               seed: int = 0, state=None):
    self.cfg = Config(model=model, train=TrainConfig(
        strategy=strategy, num_devices=num_devices, batch_size=batch_size, epochs=1000,
        learning_rate=learning_rate, seed=seed))
    self.steps_per_epoch = len(data) // batch_size
    built = setup(self.cfg, data.shape[1:], len(data))
    self.mesh, self.module, self._chunk = built.mesh, built.model, built.chunk
    sharding = built.state_sharding
    if state is None:  # Born sharded, as in the loop.
      self.state = fast(jax.jit(built.init, out_shardings=sharding))()
    else:  # Another trainer's initial state (saves compiling the init again).
      self.state = jax.device_put(state, sharding)
    self._chunks = {}
    self._data = jax.device_put(data, parallel.replicated(self.mesh))
    self._orders = parallel.EpochOrders(self.state.rng, len(data), batch_size, self.mesh)
    self.step = 0
    self.metrics: dict[str, float] = {}
    self._evals: dict[str, object] = {}

  def advance(self, steps: int) -> Trainer:
    """Trains ``steps`` more steps, in chunks that end at epoch boundaries."""
    done = 0
    while done < steps:
      n = min(steps - done, self.steps_per_epoch - self.step % self.steps_per_epoch)
      if n not in self._chunks:
        self._chunks[n] = fast(self._chunk, n)
      self.state, metrics = self._chunks[n](self.state, self._data, self._orders(self.step))
      self.metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      done += n
      self.step += n
    return self

  def epochs(self, n: int) -> Trainer:
    return self.advance(n * self.steps_per_epoch)

  @property
  def variables(self) -> dict:
    return {"params": self.state.params, **self.state.model_state}

  def figures(self, x: np.ndarray, noise: str = "", seed: int = 0) -> dict[str, float]:
    """The test figures ``flaxae eval`` reports, on ``x``."""
    cfg = self.cfg.model
    if (noise, seed) not in self._evals:  # Compiled once per corruption and seed.
      self._evals[noise, seed] = fast(jax.jit(functools.partial(
          eval_step, model=self.module, objective=None, cfg=cfg,
          rng=jax.random.key(seed), noise=noise)))
    return parallel.evaluate(self._evals[noise, seed], self.variables, x, 1000, 1,
                             functools.partial(summarize_eval, cfg=cfg))
