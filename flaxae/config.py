"""Typed, frozen configuration: the single source of truth for a run.

Every field can be overridden from the command line (``--model.widths=256,64``,
``--train.epochs=50``); see :mod:`flaxae.cli`. Configs round-trip through plain
dicts (``to_dict`` / ``from_dict``) so a run directory stores them as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

from flaxae.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the images come from and how they are split.

  Attributes:
    name: ``digits`` (scikit-learn, offline default), ``mnist``, ``fashion_mnist``
      or ``idx`` (a folder of IDX files, see ``dir``), ``npy`` (a ``.npy`` or
      ``.npz`` file, see ``path``) or ``tfds:<name>`` (TensorFlow Datasets).
    dir: Folder of the IDX files, or the TFDS data directory.
    path: The ``.npy`` / ``.npz`` file for ``name=npy``.
    test_fraction: Held-out share for sources without a test split of their own.
    limit_train: Use at most this many training examples (0: all).
    limit_test: Use at most this many test examples (0: all).
    binarize: Threshold pixels at 0.5 (for Bernoulli likelihoods).
    split_seed: Fixes the train/test split of sources without their own test
      split; kept apart from ``train.seed`` so every seed sees the same test set.
    stream: Leave the training set in its file (``.npy`` or uncompressed IDX),
      memory-mapped, and read each chunk's batches in a background thread,
      instead of placing it on the devices: for data larger than memory.
  """

  name: str = "digits"
  dir: str = ""
  path: str = ""
  test_fraction: float = 0.2
  limit_train: int = 0
  limit_test: int = 0
  binarize: bool = False
  split_seed: int = 0
  stream: bool = False


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The backbone (``arch``) and the objective (``kind``) of an autoencoder.

  Attributes:
    arch: ``dense`` or ``conv``.
    kind: The objective: ``plain``, ``sparse``, ``denoising``, ``contractive``,
      ``vae`` or ``vq`` (see :mod:`flaxae.objectives`).
    widths: Dense encoder widths from the first hidden layer to the code; the
      decoder mirrors them. A leading entry equal to the input width is read as
      the input (``784,256,64`` is ``256,64`` on 784-pixel data).
    activation: Hidden activation: relu, gelu, silu, elu, tanh, sigmoid, leaky_relu.
    channels: Conv encoder channels, one stride-2 convolution each; the decoder
      mirrors them with stride-2 transposed convolutions.
    kernel_size: Conv kernel size.
    latent_dim: Conv code size (flattened, then dense); 0 keeps a spatial code.
    loss: Reconstruction loss: ``bce`` (from logits), ``mse``, ``l1``, ``huber``
      (every kind but ``vae``, whose likelihood is ``likelihood``).
    code_activation: Applied to the code: ``auto`` (``sigmoid`` for ``sparse``
      with ``sparsity=kl`` and for ``contractive``, ``relu`` for ``sparse`` with
      ``sparsity=l1``; otherwise linear for a dense code and a conv model's
      ``latent_dim`` code, the hidden ``activation`` for a spatial conv code,
      ``latent_dim=0``), ``linear``, ``sigmoid``, ``relu``, ``tanh``.
    dropout: (every kind) Dropout rate after every hidden layer, in training.
    input_noise: (every kind) Std of Gaussian noise added to the input in
      training; the target stays clean.
    l1_weight_penalty: (every kind) λ of the penalty λ·Σ|w| on the weight
      matrices (L2 weight decay is ``train.weight_decay``).
    sparsity: (sparse) ``kl``: KL(ρ‖ρ̂) on a sigmoid code's mean activations
      over the batch; ``l1``: λ·Σⱼ|hⱼ| on each code.
    sparsity_target: (sparse, kl) ρ, the target mean activation of a code unit.
    sparsity_weight: (sparse, kl) β, the weight of the KL-ρ penalty.
    sparse_l1: (sparse, l1) λ of the L1 penalty on the code.
    noise: (denoising) The corruption: ``gaussian:σ`` (clipped to [0, 1]),
      ``mask:p`` (each value set to 0 with probability p) or ``salt_pepper:p``.
    contractive_weight: (contractive) λ of the penalty λ·‖∂h/∂x‖²_F.
    jacobian: (contractive) ``auto`` (``closed_form`` for one dense sigmoid
      layer, else ``exact``), ``closed_form``, ``exact`` (one VJP or JVP per
      code unit or input, whichever is fewer) or ``hutchinson`` (unbiased),
      for the training penalty; the reported ``jacobian_norm`` is exact.
    jacobian_probes: (contractive, hutchinson) Random probes per example.
    beta: (vae) Weight of the KL term (β-VAE; 1 is the ELBO).
    kl_warmup_steps: (vae) Raise the KL weight linearly to ``beta`` over this
      many steps: ``beta · (t + 1) / kl_warmup_steps`` at step ``t`` (0: no
      warm-up).
    likelihood: (vae) ``bernoulli`` (logits) or ``gaussian`` (mean
      ``sigmoid(logits)``, std ``likelihood_std``).
    likelihood_std: (vae) Std of the Gaussian likelihood.
    logvar_min: (vae) Lower clamp of the encoder's log-variance.
    logvar_max: (vae) Upper clamp of the encoder's log-variance.
    iwae_samples: (vae) K, samples of the importance-weighted bound (eval).
    codebook_size: (vq) K, the number of code vectors.
    codebook_dim: (vq) Size of each quantised vector: the code's last axis is
      cut into pieces of this size (0: the whole axis, i.e. the channels of a
      spatial code, or the whole vector code).
    commitment: (vq) Weight of the commitment loss ‖z_e − sg(z_q)‖².
    vq_ema: (vq) Update the codebook by moving averages of the encoder
      outputs assigned to each code (else by gradient, with a codebook loss).
    ema_decay: (vq) Decay of those moving averages.
    dead_code_restart: (vq, EMA codebook) Restart a code at an encoder output
      drawn from the batch when its average usage falls below this fraction
      of the uniform usage 1/K (0: never).
  """

  arch: Literal["dense", "conv"] = "dense"
  kind: str = "plain"
  widths: tuple[int, ...] = (128, 32)
  activation: str = "relu"
  channels: tuple[int, ...] = (32, 64)
  kernel_size: int = 3
  latent_dim: int = 32
  loss: Literal["bce", "mse", "l1", "huber"] = "bce"
  code_activation: Literal["auto", "linear", "sigmoid", "relu", "tanh"] = "auto"
  dropout: float = 0.0
  input_noise: float = 0.0
  l1_weight_penalty: float = 0.0
  sparsity: Literal["kl", "l1"] = "kl"
  sparsity_target: float = 0.05
  sparsity_weight: float = 0.1
  sparse_l1: float = 1e-3
  noise: str = "gaussian:0.5"
  contractive_weight: float = 0.01
  jacobian: Literal["auto", "closed_form", "exact", "hutchinson"] = "auto"
  jacobian_probes: int = 1
  beta: float = 1.0
  kl_warmup_steps: int = 0
  likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
  likelihood_std: float = 0.1
  logvar_min: float = -10.0
  logvar_max: float = 10.0
  iwae_samples: int = 16
  codebook_size: int = 128
  codebook_dim: int = 0
  commitment: float = 0.25
  vq_ema: bool = True
  ema_decay: float = 0.99
  dead_code_restart: float = 0.03


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, parallelism and the length of the run.

  Attributes:
    seed: Seeds the parameters, the data order and every random draw.
    epochs: Passes over the training set.
    batch_size: Global batch size (split over all devices).
    optimizer: adam, adamw, sgd or rmsprop.
    learning_rate: Peak learning rate.
    momentum: Momentum for sgd (0: plain SGD) and rmsprop.
    weight_decay: Decoupled weight decay (adamw; added as L2 to others).
    schedule: constant, cosine, or warmup_cosine.
    warmup_steps: Linear warm-up steps for warmup_cosine.
    clip_norm: Clip the global gradient norm to this (0: no clipping).
    strategy: ``jit`` (jit + NamedSharding) or ``shard_map`` (per-device code
      with ``lax.pmean`` on the gradients).
    num_devices: Use this many devices (0: all).
    steps_per_call: Steps fused into one compiled call (0: a whole epoch).
    num_seeds: Train this many independent models (seeds ``seed``,
      ``seed+1``, ...: their own initialisation, data order and noise) in one
      compiled program, vmapped over the train state. The models are split
      over the devices first (a ``seed`` mesh axis: as many groups as divide
      both the device count and ``num_seeds``), each model data-parallel over
      the rest.
    seeds_vmapped: How many of one device group's models a vmap trains side
      by side; the rest follow one after another in the same program. 0:
      automatic (all of them, except one at a time on CPU with several seed
      groups, whose cores share the caches that stacked activations overflow).
    max_bad_steps: Stop after this many consecutive steps with a non-finite
      loss or gradient (each is skipped, leaving the parameters unchanged).
    eval_batch_size: Batch size for evaluation.
    micro_batch_size: Run each device's batch as micro-batches of this size,
      one after another, averaging their gradients: the same step, with
      activations that fit in cache. 0: automatic (on CPU, 16 for conv
      models when it divides a larger per-device batch, else the whole
      batch); -1: never. Not for kinds that take whole-batch statistics
      (sparse, vq).
    compute_dtype: ``float32``, or ``bfloat16`` for mixed precision on
      accelerators: layers compute in bfloat16 while parameters, optimizer
      state, losses and codes stay float32 (on CPU, XLA runs bfloat16
      element-wise ops through conversions: slower than float32).
    cpu_matmuls: On CPU, the library behind the compiled training chunk's
      matrix products: ``xla`` (XLA's own choice: YNNPACK fusions);
      ``eigen``, faster for small products (a dense 784-32-784 AE at batch
      128: +27 %) and slower for large ones (the conv AE: -42 %); or ``mkl``,
      the layers' float32 products (dense layers, the convolutions' matmul
      forms) through Intel MKL's sgemm in an XLA custom call
      (:mod:`flaxae.kernels`; needs ``pip install "flaxae[mkl]"`` and a C++
      compiler for its first use; at batch 256 the dense AE 784-256-64 +11-24 %,
      the conv AE +22-25 %; many seeds whose groups span several devices
      need strategy ``shard_map``).
      Results differ in the last bits between the three. Ignored on GPU and
      TPU.
    conv_impl: How conv models compute their convolutions, with the same
      parameters and the same function either way (a model trained with one
      runs in the other: ``flaxae.models.build_model(..., conv_impl=...)``):
      ``matmul``, flaxae's matrix-multiplication forms (im2col, transposed
      convolutions without zero taps), written because XLA's CPU backend runs
      some convolution gradients as slow loops; or ``xla``, ``lax``'s
      convolutions (cuDNN's on NVIDIA GPUs).
  """

  seed: int = 0
  epochs: int = 50
  batch_size: int = 128
  optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
  learning_rate: float = 1e-3
  momentum: float = 0.9
  weight_decay: float = 0.0
  schedule: Literal["constant", "cosine", "warmup_cosine"] = "constant"
  warmup_steps: int = 0
  clip_norm: float = 0.0
  strategy: Literal["jit", "shard_map"] = "jit"
  num_devices: int = 0
  steps_per_call: int = 0
  num_seeds: int = 1
  seeds_vmapped: int = 0
  max_bad_steps: int = 10
  eval_batch_size: int = 1000
  micro_batch_size: int = 0
  compute_dtype: Literal["float32", "bfloat16"] = "float32"
  cpu_matmuls: Literal["xla", "eigen", "mkl"] = "xla"
  conv_impl: Literal["matmul", "xla"] = "matmul"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When to save and how many checkpoints to keep.

  Attributes:
    every_steps: Save every this many steps (0: at the end of every epoch).
    keep: Keep the last this many checkpoints.
  """

  every_steps: int = 0
  keep: int = 3


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Multi-process (multi-host) training on JAX's distributed runtime.

  Attributes:
    enabled: Call ``jax.distributed.initialize`` before training. With no
      coordinator given, JAX reads ``JAX_COORDINATOR_ADDRESS`` or detects the
      cluster (SLURM, Open MPI, Cloud TPU, ...).
    coordinator: ``host:port`` of process 0.
    num_processes: How many processes (0: from the environment).
    process_id: This process's index (-1: from the environment).
    cpu_collectives: Collectives for CPU devices (``gloo`` or ``mpi``).
  """

  enabled: bool = False
  coordinator: str = ""
  num_processes: int = 0
  process_id: int = -1
  cpu_collectives: Literal["gloo", "mpi"] = "gloo"


@dataclasses.dataclass(frozen=True)
class Config:
  """A whole run.

  Attributes:
    run_dir: Where config, checkpoints, metrics and pictures go (default
      ``runs/<data>-<arch>-<kind>``). An existing run directory is resumed.
    profile: Save a ``jax.profiler`` trace of one epoch (the second, after
      compilation, or the only one) to ``<run_dir>/profile`` (TensorBoard's
      profile plugin or Perfetto read it).
    compilation_cache: A folder for JAX's persistent compilation cache (e.g.
      ``~/.cache/flaxae``): a later run of the same program, a resume
      included, loads its compiled training chunk instead of compiling it
      again (15-18 s for a fused epoch on an H100). Empty: off.
  """

  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  distributed: DistributedConfig = DistributedConfig()
  run_dir: str = ""
  profile: bool = False
  compilation_cache: str = ""

  def resolved_run_dir(self) -> str:
    """``run_dir``, or ``runs/<data>-<arch>-<kind>`` when it is empty."""
    if self.run_dir:
      return self.run_dir
    data = self.data.name.replace(":", "-").replace("/", "-")
    return f"runs/{data}-{self.model.arch}-{self.model.kind}"


_POSITIVE = {
    "train.epochs", "train.batch_size", "model.kernel_size", "checkpoint.keep",
    "train.max_bad_steps", "train.eval_batch_size", "train.num_seeds", "model.jacobian_probes",
    "model.likelihood_std", "model.iwae_samples", "model.codebook_size",
}
_NON_NEGATIVE = {
    "train.learning_rate", "train.weight_decay", "train.warmup_steps",
    "train.clip_norm", "train.num_devices", "train.momentum", "train.seeds_vmapped",
    "checkpoint.every_steps", "data.limit_train", "data.limit_test",
    "model.latent_dim", "train.steps_per_call", "model.input_noise",
    "model.l1_weight_penalty", "model.sparsity_weight", "model.sparse_l1",
    "model.contractive_weight", "model.beta", "model.kl_warmup_steps",
    "model.codebook_dim", "model.commitment", "model.dead_code_restart", "data.split_seed",
}
# Open intervals (lo, hi) and half-open [lo, hi).
_IN_OPEN_UNIT = {"model.sparsity_target", "model.ema_decay"}
_IN_UNIT = {"model.dropout"}


def validate(cfg: Config) -> Config:
  """Checks types and choices (a config built in code has not met the CLI's
  checks), then ranges and names that types alone cannot; returns ``cfg``."""
  if not isinstance(cfg, Config):
    raise ConfigError(f"a flaxae.Config is needed, got {type(cfg).__name__} {cfg!r:.80}; "
                      "to use a trained run, flaxae.load(run_dir)")
  from_dict(to_dict(cfg))
  flat = _flatten(to_dict(cfg))
  for key, value in flat.items():  # NaN passes every comparison below.
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"{key} must be a finite number, got {value}")
  for key in _POSITIVE:
    if flat[key] <= 0:
      raise ConfigError(f"{key} must be positive, got {flat[key]}")
  for key in _NON_NEGATIVE:
    if flat[key] < 0:
      raise ConfigError(f"{key} must not be negative, got {flat[key]}")
  for key in _IN_OPEN_UNIT:
    if not 0.0 < flat[key] < 1.0:
      raise ConfigError(f"{key} must be in (0, 1), got {flat[key]}")
  for key in _IN_UNIT:
    if not 0.0 <= flat[key] < 1.0:
      raise ConfigError(f"{key} must be in [0, 1), got {flat[key]}")
  last_seed = cfg.train.seed + cfg.train.num_seeds - 1
  if cfg.train.seed < 0 or last_seed >= 2**32:  # Keys take 32 bits: 2**32 would be 0 again.
    raise ConfigError(
        f"train.seed must be in [0, 2**32 - train.num_seeds], got {cfg.train.seed}"
        + (f" with train.num_seeds={cfg.train.num_seeds}" if cfg.train.num_seeds > 1 else ""))
  if cfg.data.split_seed >= 2**32:
    raise ConfigError(f"data.split_seed must be in [0, 2**32), got {cfg.data.split_seed}")
  coordinator = cfg.distributed.coordinator
  if coordinator:
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ConfigError(f"distributed.coordinator must be HOST:PORT (a port in 1..65535), "
                        f"got {coordinator!r}")
  if cfg.model.logvar_min >= cfg.model.logvar_max:
    raise ConfigError(
        f"model.logvar_min ({cfg.model.logvar_min}) must be smaller than "
        f"model.logvar_max ({cfg.model.logvar_max})")
  micro = cfg.train.micro_batch_size
  if micro < -1:
    raise ConfigError(f"train.micro_batch_size must be -1 (never), 0 (automatic) or "
                      f"positive, got {micro}")
  if micro > 0 and cfg.train.batch_size % micro:
    raise ConfigError(f"train.micro_batch_size={micro} must divide train.batch_size="
                      f"{cfg.train.batch_size}")
  if not 0.0 < cfg.data.test_fraction < 1.0:
    raise ConfigError(
        f"data.test_fraction must be in (0, 1), got {cfg.data.test_fraction}")
  for name in ("widths", "channels"):
    sizes = getattr(cfg.model, name)
    if not sizes or any(s <= 0 for s in sizes):
      raise ConfigError(
          f"model.{name} must be a non-empty list of positive sizes, got "
          f"{','.join(map(str, sizes)) or '(empty)'}")
  # Imported here: the registries import this module.
  from flaxae import models, objectives  # pylint: disable=import-outside-toplevel
  models.check_activation(cfg.model.activation)
  objectives.get(cfg.model.kind)
  objectives.parse_noise(cfg.model.noise)
  models.code_activation(cfg.model)
  if (0 < micro < cfg.train.batch_size
      and objectives.kind(cfg.model.kind).batch_statistics):
    raise ConfigError(
        f"model.kind={cfg.model.kind} takes statistics of the whole batch; it cannot be "
        f"split into micro-batches of train.micro_batch_size={micro} (use 0 or -1)")
  return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
  """A JSON-ready nested dict (tuples become lists)."""
  return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: dict[str, Any], cls: type = Config) -> Any:
  """Builds a config from a nested dict, refusing unknown keys and bad types."""
  if not isinstance(d, dict):
    raise ConfigError(f"expected a mapping for {cls.__name__}, got {d!r}")
  hints = typing.get_type_hints(cls)
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ConfigError(
        f"unknown config key(s) {', '.join(unknown)} in {cls.__name__}; "
        f"known: {', '.join(sorted(known))}")
  kwargs = {}
  for key, value in d.items():
    kwargs[key] = _coerce(value, hints[key], f"{cls.__name__}.{key}")
  return cls(**kwargs)


def read(path: str | os.PathLike, error: type[Exception] = ConfigError) -> Config:
  """The config in a JSON file (a run's ``config.json``; or a run directory,
  for its ``config.json``). A file that is missing or not JSON raises
  ``error`` naming it (a run directory's reader raises a CheckpointError);
  one that is not a config, a ConfigError."""
  path = Path(path)
  if path.is_dir():
    path = path / "config.json"
  try:
    d = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise error(f"config file {path} does not exist") from e
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise error(f"{path} is not valid JSON ({e})") from e
  except OSError as e:
    raise error(f"cannot read config file {path}: {e.strerror or e}") from e
  try:
    return from_dict(d)
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from e


def _coerce(value: Any, hint: Any, where: str) -> Any:
  if dataclasses.is_dataclass(hint):
    return from_dict(value, hint)
  origin = typing.get_origin(hint)
  if origin is tuple:
    (elem, _) = typing.get_args(hint)
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{where} must be a list, got {value!r}")
    return tuple(_coerce(v, elem, where) for v in value)
  if origin is Literal:
    if value not in typing.get_args(hint):
      raise ConfigError(
          f"{where} must be one of {', '.join(map(str, typing.get_args(hint)))}, "
          f"got {value!r}")
    return value
  if origin in (typing.Union, types.UnionType):
    return value
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
    raise ConfigError(
        f"{where} must be of type {hint.__name__}, got {value!r}")
  return value


def replace(cfg: Config, **sections: dict[str, Any]) -> Config:
  """``replace(cfg, train={"epochs": 3})``: a copy with some fields changed."""
  d = to_dict(cfg)
  for section, fields in sections.items():
    if isinstance(fields, dict):
      d[section].update(fields)
    else:
      d[section] = fields
  return from_dict(d)


def fingerprint(cfg: Config) -> str:
  """A short hash of what defines the model's function (data and model)."""
  blob = json.dumps({"data": to_dict(cfg.data), "model": to_dict(cfg.model)},
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out
