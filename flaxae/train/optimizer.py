"""Optax optimizer and learning-rate schedule from the config."""

from __future__ import annotations

import optax

from flaxae.config import TrainConfig
from flaxae.errors import ConfigError


def make_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
  """constant, cosine (to 0 at ``total_steps``) or linear warm-up + cosine."""
  lr, total = cfg.learning_rate, max(total_steps, 1)
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, total)
  if cfg.schedule == "warmup_cosine":
    if cfg.warmup_steps >= total:
      raise ConfigError(
          f"train.warmup_steps ({cfg.warmup_steps}) must be smaller than the "
          f"number of training steps ({total})")
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, cfg.warmup_steps, total)
  raise ConfigError(f"unknown train.schedule {cfg.schedule!r}; known: "
                    "constant, cosine, warmup_cosine")


def make_optimizer(cfg: TrainConfig,
                   total_steps: int) -> optax.GradientTransformation:
  """Clipping (optional), then the optimizer with its schedule.

  ``adamw`` decays weights decoupled from the gradient; the others add
  ``weight_decay·params`` to the gradient (L2), applied before the update.
  """
  lr = make_schedule(cfg, total_steps)
  parts = []
  if cfg.clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  if cfg.optimizer == "adamw":
    parts.append(optax.adamw(lr, weight_decay=cfg.weight_decay))
  else:
    if cfg.weight_decay:
      parts.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.optimizer == "adam":
      parts.append(optax.adam(lr))
    elif cfg.optimizer == "sgd":
      parts.append(optax.sgd(lr, momentum=cfg.momentum or None))
    elif cfg.optimizer == "rmsprop":
      parts.append(optax.rmsprop(lr, momentum=cfg.momentum))
    else:
      raise ConfigError(f"unknown train.optimizer {cfg.optimizer!r}; known: "
                        "adam, adamw, rmsprop, sgd")
  return optax.chain(*parts)
