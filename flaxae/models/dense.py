"""Dense (fully connected) encoder and decoder."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp


class DenseEncoder(nn.Module):
  """Maps ``(B, D)`` inputs to ``(B, widths[-1])`` codes.

  Attributes:
    widths: Hidden widths then the code width.
    activation: Applied after every hidden layer.
    code_activation: Applied to the code (None: linear).
    dropout: Dropout rate after every hidden layer when ``train``.
    dtype: Computation dtype (parameters stay float32).
  """

  widths: Sequence[int]
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  code_activation: Callable[[jnp.ndarray], jnp.ndarray] | None = None
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for i, width in enumerate(self.widths[:-1]):
      x = self.activation(nn.Dense(width, dtype=self.dtype, name=f"hidden_{i}")(x))
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(self.widths[-1], dtype=self.dtype, name="code")(x)
    return x if self.code_activation is None else self.code_activation(x)


class DenseDecoder(nn.Module):
  """Maps ``(B, code)`` codes to ``(B, out_features)`` logits.

  Attributes:
    widths: Hidden widths, from the code side outwards.
    out_features: Width of the reconstruction.
    activation: Applied after every hidden layer (the output is logits).
    dropout: Dropout rate after every hidden layer when ``train``.
    dtype: Computation dtype (parameters stay float32).
  """

  widths: Sequence[int]
  out_features: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for i, width in enumerate(self.widths):
      z = self.activation(nn.Dense(width, dtype=self.dtype, name=f"hidden_{i}")(z))
      if self.dropout:
        z = nn.Dropout(self.dropout, deterministic=not train)(z)
    return nn.Dense(self.out_features, dtype=self.dtype, name="logits")(z)
