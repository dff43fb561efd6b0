"""Names to activations, and config to module."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from flaxae.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "leaky_relu": nn.leaky_relu,
}


def check_activation(name: str) -> None:
  if name not in ACTIVATIONS:
    raise ConfigError(
        f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")


def activation_fn(name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
  check_activation(name)
  return ACTIVATIONS[name]
