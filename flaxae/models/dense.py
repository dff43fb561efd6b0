"""Dense (fully connected) encoder and decoder."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flaxae.kernels import dot_general_for


def dense(features: int, dtype, matmuls: str, name: str) -> nn.Dense:
  """``nn.Dense(features)`` computing in ``dtype``, its products by ``matmuls``
  (``xla``, or ``mkl``: :mod:`flaxae.kernels`; the same parameters)."""
  return nn.Dense(features, dtype=dtype, dot_general=dot_general_for(matmuls), name=name)


class DenseEncoder(nn.Module):
  """Maps ``(B, D)`` inputs to ``(B, widths[-1])`` codes.

  Attributes:
    widths: Hidden widths then the code width.
    activation: Applied after every hidden layer.
    code_activation: Applied to the code (None: linear).
    dropout: Dropout rate after every hidden layer when ``train``.
    dtype: Computation dtype (parameters stay float32).
    matmuls: ``xla`` or ``mkl`` (:mod:`flaxae.kernels`): who computes the
      layers' float32 products on CPU.
  """

  widths: Sequence[int]
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  code_activation: Callable[[jnp.ndarray], jnp.ndarray] | None = None
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  matmuls: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for i, width in enumerate(self.widths[:-1]):
      x = self.activation(dense(width, self.dtype, self.matmuls, f"hidden_{i}")(x))
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = dense(self.widths[-1], self.dtype, self.matmuls, "code")(x)
    return x if self.code_activation is None else self.code_activation(x)


class DenseDecoder(nn.Module):
  """Maps ``(B, code)`` codes to ``(B, out_features)`` logits.

  Attributes:
    widths: Hidden widths, from the code side outwards.
    out_features: Width of the reconstruction.
    activation: Applied after every hidden layer (the output is logits).
    dropout: Dropout rate after every hidden layer when ``train``.
    dtype: Computation dtype (parameters stay float32).
    matmuls: As :class:`DenseEncoder`'s.
  """

  widths: Sequence[int]
  out_features: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  matmuls: str = "xla"

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for i, width in enumerate(self.widths):
      z = self.activation(dense(width, self.dtype, self.matmuls, f"hidden_{i}")(z))
      if self.dropout:
        z = nn.Dropout(self.dropout, deterministic=not train)(z)
    return dense(self.out_features, self.dtype, self.matmuls, "logits")(z)
