"""Dense (fully connected) encoder and decoder."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp


class DenseEncoder(nn.Module):
  """Maps ``(B, D)`` inputs to ``(B, widths[-1])`` codes.

  Attributes:
    widths: Hidden widths then the code width.
    activation: Applied after every hidden layer (the code is linear).
  """

  widths: Sequence[int]
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i, width in enumerate(self.widths[:-1]):
      x = self.activation(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.widths[-1], name="code")(x)


class DenseDecoder(nn.Module):
  """Maps ``(B, code)`` codes to ``(B, out_features)`` logits.

  Attributes:
    widths: Hidden widths, from the code side outwards.
    out_features: Width of the reconstruction.
    activation: Applied after every hidden layer (the output is logits).
  """

  widths: Sequence[int]
  out_features: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    for i, width in enumerate(self.widths):
      z = self.activation(nn.Dense(width, name=f"hidden_{i}")(z))
    return nn.Dense(self.out_features, name="logits")(z)
