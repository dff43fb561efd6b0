"""The Python API: train a run, load a run, and use it on numpy arrays.

>>> import flaxae
>>> cfg = flaxae.Config(train=flaxae.TrainConfig(epochs=5))
>>> run = flaxae.fit(cfg)                      # digits, dense, plain
>>> run = flaxae.load(run.dir)                 # later, elsewhere
>>> codes = run.encode(images)                 # (N, 32) numpy
>>> images_again = run.decode(codes)           # in [0, 1]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from flaxae import io, viz
from flaxae.config import Config
from flaxae.errors import ConfigError, DataError, ShapeError
from flaxae.models import Autoencoder


@functools.partial(jax.jit, static_argnames=("model", "method"))
def _apply(model, variables, x, method):
  return model.apply(variables, x, method=method)


def _array(x, what: str) -> np.ndarray:
  """``x`` as a NumPy array of numbers (a memory-mapped one stays mapped), or
  a DataError."""
  try:
    x = np.asarray(x)
  except ValueError as e:  # A ragged list, say.
    raise DataError(f"{what} must be an array of numbers ({e})") from None
  if x.dtype == bool or not (np.issubdtype(x.dtype, np.floating)
                             or np.issubdtype(x.dtype, np.integer)):
    raise DataError(f"{what} must be numbers (uint8 or float), got dtype {x.dtype}")
  return x


def _float32(x: np.ndarray, what: str, images: bool) -> np.ndarray:
  """Checked float32 values of ``x``: no NaN or Inf; images (uint8 divided by
  255) in [0, 1]."""
  dtype = x.dtype
  x = x.astype(np.float32) / 255.0 if images and dtype == np.uint8 else (
      x.astype(np.float32))
  if not np.all(np.isfinite(x)):
    raise DataError(f"{what} contain NaN or Inf")
  if images and (x.min(initial=0.0) < 0.0 or x.max(initial=0.0) > 1.0):
    kind = "float" if np.issubdtype(dtype, np.floating) else f"{dtype} (not uint8)"
    raise DataError(
        f"{kind} inputs must be in [0, 1], got values in "
        f"[{x.min():.3g}, {x.max():.3g}]; scale them, or pass uint8 (divided by 255)")
  return x


def layouts(shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
  """The shapes one example of ``shape`` may come in: itself, flattened, and
  (for one channel) without its channel axis: ``(28, 28, 1)``, ``(784,)`` and
  ``(28, 28)``. Nothing else is read as that example: an NCHW batch, or
  images with height and width swapped, hold the right number of values in
  the wrong order."""
  shape = tuple(int(s) for s in shape)
  out = [shape, (math.prod(shape),)]
  if len(shape) > 1 and shape[-1] == 1:
    out.append(shape[:-1])
  return tuple(dict.fromkeys(out))


def count_examples(shape: tuple[int, ...], example_shape: tuple[int, ...], what: str,
                   model_takes: str) -> int:
  """How many examples of ``example_shape`` an array of ``shape`` holds: a batch
  of them in one of their :func:`layouts`, or one of them (1); a ShapeError
  naming both shapes otherwise."""
  shape = tuple(int(s) for s in shape)
  accepted = layouts(example_shape)
  if len(shape) > 1 and shape[1:] in accepted:
    return shape[0]
  if shape in accepted:
    return 1
  raise ShapeError(
      f"{what} of shape {shape} do not fit this model, which {model_takes} of shape "
      f"{tuple(example_shape)} (a batch of them, flattened or one channel without its "
      f"axis, or one of them)")


def _examples(x, shape: tuple[int, ...], what: str, model_takes: str) -> np.ndarray:
  """``x`` as ``(N, *shape)`` in its own dtype (see :func:`count_examples`), its
  values not yet checked; a ShapeError or DataError."""
  x = _array(x, what)
  return x.reshape(count_examples(x.shape, shape, what, model_takes), *shape)


def _images_of(x, feature_shape: tuple[int, ...]) -> np.ndarray:
  """Checks and converts inputs to float32 ``(N, *feature_shape)`` in [0, 1]."""
  return _float32(_examples(x, feature_shape, "inputs", "takes examples"), "inputs", True)


def _codes_of(z, code_shape: tuple[int, ...]) -> np.ndarray:
  """Checks and converts codes to float32 ``(N, *code_shape)``."""
  return _float32(_examples(z, code_shape, "codes", "decodes codes"), "codes", False)


@functools.lru_cache(maxsize=16)
def _eval_program(model: Autoencoder, cfg, seed: int, noise: str) -> Callable:
  """The compiled evaluation of ``model`` on one device (one per model,
  config, seed and corruption: a Run evaluated again compiles nothing)."""
  # pylint: disable=import-outside-toplevel
  from flaxae import objectives
  from flaxae.train import parallel
  from flaxae.train.step import eval_step
  return parallel.make_eval(functools.partial(
      eval_step, model=model, objective=objectives.get(cfg.kind), cfg=cfg,
      rng=jax.random.key(seed), noise=noise), parallel.make_mesh(1))


@dataclasses.dataclass
class Run:
  """A trained autoencoder with its config, history and run directory.

  Attributes:
    dir: The run directory.
    config: Its config.
    model: The Linen module (``encode`` / ``decode`` methods).
    variables: ``{"params": ..., **model_state}`` for ``model.apply``.
    history: Per-epoch metrics, as in ``metrics.jsonl``.
    state: The full train state, when the run was trained in this process.
    interrupted_by: The signal (SIGINT, SIGTERM) that stopped training early,
      after saving a checkpoint; None when it ran to its end.
    seed_index: Which model of a run of ``train.num_seeds`` models
      ``variables`` holds (:meth:`select` gives another).
  """

  dir: Path
  config: Config
  model: Autoencoder
  variables: dict[str, Any]
  history: list[dict[str, Any]]
  state: Any = None
  interrupted_by: int | None = None
  seed_index: int = 0

  @property
  def feature_shape(self) -> tuple[int, ...]:
    """The shape of one example, ``(H, W, C)`` for images, ``(D,)`` for vectors."""
    return tuple(self.model.feature_shape)

  @property
  def code_shape(self) -> tuple[int, ...]:
    """The shape of one example's code (what :meth:`encode` returns per row)."""
    return tuple(self.model.code_shape)

  def select(self, seed_index: int) -> Run:
    """This run with model ``seed_index`` of its ``train.num_seeds`` models."""
    # pylint: disable-next=import-outside-toplevel
    from flaxae.train.seeds import seed_variables
    seed_index = _checked_seed_index(seed_index, self.config.train.num_seeds)
    if seed_index == self.seed_index:
      return self
    if self.state is None:
      raise ConfigError(
          f"this Run holds model {self.seed_index} only; load {self.dir} with "
          f"seed_index={seed_index} for model {seed_index}")
    return dataclasses.replace(self, variables=seed_variables(self.state, seed_index),
                               seed_index=seed_index)

  def _batched(self, x: np.ndarray, method: str, images: bool,
               batch_size: int = 1024) -> np.ndarray:
    """``method`` of the examples ``x`` (checked and converted a batch at a
    time, so that a memory-mapped ``x`` is never read whole). Each batch is
    padded to a power of two (at most ``batch_size``): a service called with
    inputs of every length compiles a dozen programs, not one per length."""
    from flaxae.train import parallel  # pylint: disable=import-outside-toplevel
    what = "inputs" if images else "codes"
    if not len(x):  # No examples: none out, in the shape the method gives.
      out = jax.eval_shape(lambda v, x: self.model.apply(v, x, method=method),
                           self.variables, jax.ShapeDtypeStruct((1, *x.shape[1:]), np.float32))
      return np.zeros((0, *out.shape[1:]), out.dtype)
    out = []
    for i in range(0, len(x), batch_size):
      batch = _float32(np.asarray(x[i:i + batch_size]), what, images)
      n = len(batch)
      size = parallel.padded_size(n, batch_size)
      if size > n:
        batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
      out.append(np.asarray(_apply(self.model, self.variables, batch, method))[:n])
    return np.concatenate(out)

  def encode(self, x: np.ndarray) -> np.ndarray:
    """Codes of images ``x`` (uint8, or float in [0, 1])."""
    return self._batched(_examples(x, self.feature_shape, "inputs", "takes examples"),
                         "encode", images=True)

  def decode(self, z: np.ndarray) -> np.ndarray:
    """Images in [0, 1] decoded from codes ``z`` (``(N, *code_shape)``, or one code)."""
    logits = self._batched(_examples(z, self.code_shape, "codes", "decodes codes"),
                           "decode", images=False)
    return np.asarray(jax.nn.sigmoid(logits))

  def reconstruct(self, x: np.ndarray) -> np.ndarray:
    """Reconstructions in [0, 1] of images ``x``."""
    logits = self._batched(_examples(x, self.feature_shape, "inputs", "takes examples"),
                           "__call__", images=True)
    return np.asarray(jax.nn.sigmoid(logits))

  def evaluate(self, x: np.ndarray, noise: str | None = None) -> dict[str, float]:
    """Test figures on ``x``: the loss, BCE, MSE and PSNR (dB), and the kind's own.

    Sparse: ``mean_activation``, ``near_zero``; contractive: ``jacobian_norm``;
    vae: ``elbo``, ``iwae_nll`` (nats per image), ``kl``; vq: ``perplexity``,
    ``codes_used``. With ``noise`` (``gaussian:0.5``, ``mask:0.5``,
    ``salt_pepper:0.1``; default: a denoising model's own) also
    ``noisy_psnr`` and ``denoised_psnr``.
    """
    return self._evaluator(x, noise)(self.variables)

  def evaluate_each(self, x: np.ndarray, noise: str | None = None) -> dict[str, Any]:
    """:meth:`evaluate` for every model of a run of ``train.num_seeds`` models:
    each figure's mean over the models, with ``<name>_std`` and
    ``<name>_per_seed`` (as training reports its test figures); for a run of
    one model, :meth:`evaluate` itself."""
    # pylint: disable-next=import-outside-toplevel
    from flaxae.train.seeds import each_seed_variables
    if self.state is None or self.state.step.ndim == 0:
      return self.evaluate(x, noise)
    return self._evaluate_models(x, noise, each_seed_variables(self.state))

  def _evaluate_models(self, x: np.ndarray, noise: str | None,
                       models: list[dict[str, Any]]) -> dict[str, Any]:
    # pylint: disable-next=import-outside-toplevel
    from flaxae.train.seeds import across_seeds
    evaluate = self._evaluator(x, noise)  # One check of x, one compiled program.
    each = [evaluate(v) for v in models]
    return across_seeds({k: [figures[k] for figures in each] for k in each[0]})

  def _evaluator(self, x: np.ndarray, noise: str | None) -> Callable[[Any], dict[str, float]]:
    """The test figures on ``x`` of a model's variables (this run's model)."""
    from flaxae import objectives  # pylint: disable=import-outside-toplevel
    from flaxae.train import parallel  # pylint: disable=import-outside-toplevel
    from flaxae.train.step import summarize_eval  # pylint: disable=import-outside-toplevel

    if noise is not None and not isinstance(noise, str):
      raise ConfigError(f"noise must be a corruption such as 'gaussian:0.5', got {noise!r}")
    x = _images_of(x, self.feature_shape)
    if not len(x):
      raise DataError("no examples to evaluate")
    cfg = self.config.model
    eval_jit = _eval_program(self.model, cfg, self.config.train.seed,
                             objectives.eval_noise(cfg, noise))
    return lambda variables: parallel.evaluate(
        eval_jit, variables, x, self.config.train.eval_batch_size, 1,
        functools.partial(summarize_eval, cfg=cfg))

  def sample(self, n: int, seed: int = 0) -> np.ndarray:
    """``n`` images in [0, 1] generated from the prior (``vae`` runs only)."""
    # pylint: disable-next=import-outside-toplevel
    from flaxae.models import VariationalAutoencoder, sample
    if not isinstance(self.model, VariationalAutoencoder):
      raise ConfigError(f"sampling needs a model.kind=vae run, this one is "
                        f"{self.config.model.kind}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
      raise ConfigError(f"the number of samples must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
        0 <= seed < 2**32):
      raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return np.asarray(sample(self.model, self.variables, jax.random.key(seed), n))

  def write_outputs(self, test_x: np.ndarray, num_images: int = 10,
                    models: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Writes ``eval.json`` (for a run of many seeds: each figure's mean over
    the models, ``_std`` and ``_per_seed``, as :meth:`evaluate_each`) and
    ``reconstructions.png`` (by this Run's model) for the test set.
    ``models``: every model's variables, gathered by the caller (in a
    multi-host job every process must gather them; one process writes)."""
    figures = (self.evaluate_each(test_x) if models is None
               else self._evaluate_models(test_x, None, models))
    io.write_json(self.dir / "eval.json", figures)
    x = test_x[:num_images]
    viz.save_reconstructions(x, self.reconstruct(x), self.dir / "reconstructions.png",
                             image_shape=self.feature_shape)
    return figures


def fit(config: Config, *, progress: bool = True) -> Run:
  """Trains (or resumes) the run ``config`` describes; see ``train_and_evaluate``.

  (Named ``fit``, not ``train``: ``flaxae.train`` is the training subpackage.)
  """
  from flaxae.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  return train_and_evaluate(config, progress=progress)


def load(run_dir: str | os.PathLike, step: int | None = None, seed_index: int = 0,
         cpu_matmuls: str = "xla") -> Run:
  """The run in ``run_dir`` at its latest (or the given) checkpoint.

  For a run of ``train.num_seeds`` models, ``seed_index`` picks the model the
  Run's helpers use; ``run.state`` holds them all (stacked on axis 0).
  ``cpu_matmuls="mkl"`` computes the loaded model's products with MKL on CPU
  (:mod:`flaxae.kernels`; the dense AE 784-256-64 reconstructs 10–20 % faster
  on a 2-core Xeon); the default, XLA's, needs neither MKL nor a compiler,
  however the run was trained.
  """
  # pylint: disable=import-outside-toplevel
  from flaxae import kernels
  from flaxae.train import parallel
  from flaxae.train.logger import MetricsLogger
  from flaxae.train.restore import restore_state
  from flaxae.train.seeds import seed_variables
  if not isinstance(run_dir, (str, os.PathLike)):
    raise ConfigError(f"load takes a run directory (a path), got {run_dir!r:.80}")
  if cpu_matmuls not in kernels.MATMULS:
    raise ConfigError(f"cpu_matmuls must be one of {kernels.MATMULS}, got {cpu_matmuls!r}")
  cfg, model, state, _ = restore_state(run_dir, step=step)
  seed_index = _checked_seed_index(seed_index, cfg.train.num_seeds)
  if parallel.model_matmuls(cpu_matmuls, parallel.make_mesh(1), "jit") == "mkl":
    model = model.clone(matmuls="mkl")
  history = MetricsLogger(run_dir, enabled=False).history()
  return Run(Path(run_dir), cfg, model, seed_variables(state, seed_index), history,
             state=state, seed_index=seed_index)


def _checked_seed_index(seed_index: Any, num_seeds: int) -> int:
  if isinstance(seed_index, bool) or not isinstance(seed_index, (int, np.integer)):
    raise ConfigError(f"seed_index must be an integer, got {seed_index!r}")
  if not 0 <= seed_index < num_seeds:
    raise ConfigError(f"seed_index {seed_index} is out of range: the run has "
                      f"{num_seeds} model(s)")
  return int(seed_index)


def as_run(run: Run | str | os.PathLike, seed_index: int | None = None) -> Run:
  """For functions that take a Run or its directory: model ``seed_index`` of a
  run of several seeds (None: the Run's own model, or a directory's first)."""
  if isinstance(run, Run):
    return run if seed_index is None else run.select(seed_index)
  return load(run, seed_index=0 if seed_index is None else seed_index)


def encode(run: Run | str | os.PathLike, x: np.ndarray) -> np.ndarray:
  """:meth:`Run.encode` of a Run or its run directory."""
  return as_run(run).encode(x)


def decode(run: Run | str | os.PathLike, z: np.ndarray) -> np.ndarray:
  """:meth:`Run.decode` of a Run or its run directory."""
  return as_run(run).decode(z)


def reconstruct(run: Run | str | os.PathLike, x: np.ndarray) -> np.ndarray:
  """:meth:`Run.reconstruct` of a Run or its run directory."""
  return as_run(run).reconstruct(x)
