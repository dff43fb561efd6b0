"""Convolutional encoder and decoder for images of any H×W×C.

The layers are :mod:`flaxae.models.layers`' matmul forms of ``nn.Conv`` and
``nn.ConvTranspose`` (``conv_impl="matmul"``: fast on every backend, and the
only fast form on XLA's CPU backend), or those Flax layers themselves
(``conv_impl="xla"``: ``lax`` convolutions, cuDNN's on NVIDIA GPUs), with the
same parameters and the same function.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flaxae.models.dense import dense
from flaxae.models.layers import Conv, ConvTranspose


CONV_IMPLS = ("matmul", "xla")


def conv(impl: str, features: int, k: int, s: int, dtype, name: str,
         matmuls: str = "xla") -> nn.Module:
  """A SAME ``k×k`` convolution of stride ``s`` in the form ``impl`` names
  (the matmul form's products by ``matmuls``)."""
  if impl == "xla":
    return nn.Conv(features, (k, k), strides=(s, s), padding="SAME", dtype=dtype, name=name)
  if impl != "matmul":
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  return Conv(features, k, s, matmuls, name=name)


def conv_transpose(impl: str, features: int, k: int, s: int, dtype, name: str,
                   matmuls: str = "xla") -> nn.Module:
  """A SAME ``k×k`` transposed convolution of stride ``s`` in the form ``impl``
  names (the matmul form's products by ``matmuls``)."""
  if impl == "xla":
    return nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME", dtype=dtype,
                            name=name)
  if impl != "matmul":
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  return ConvTranspose(features, k, s, matmuls, name=name)


def downsampled(size: int, levels: int) -> int:
  """Spatial size after ``levels`` stride-2 SAME convolutions."""
  for _ in range(levels):
    size = math.ceil(size / 2)
  return size


class ConvEncoder(nn.Module):
  """Stride-2 convolutions down, then (optionally) a dense code.

  Maps ``(B, H, W, C)`` images to ``(B, latent_dim)`` codes, or to a spatial
  code ``(B, h, w, channels[-1])`` when ``latent_dim`` is 0.

  Attributes:
    channels: Channels of the stride-2 convolutions.
    latent_dim: Width of the dense code (0: the last convolution is the code).
    kernel_size: Kernel size.
    activation: Applied after every hidden layer.
    code_activation: Applied to the code (None: linear for a dense code, and
      ``activation`` for a spatial one).
    dropout: Dropout rate after every hidden layer when ``train``.
  """

  channels: Sequence[int]
  latent_dim: int
  kernel_size: int = 3
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  code_activation: Callable[[jnp.ndarray], jnp.ndarray] | None = None
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32  # Computation dtype; parameters stay float32.
  conv_impl: str = "matmul"
  matmuls: str = "xla"  # Who computes the products (:mod:`flaxae.kernels`).

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    last = len(self.channels) - 1
    for i, ch in enumerate(self.channels):
      x = conv(self.conv_impl, ch, self.kernel_size, 2, self.dtype, f"conv_{i}",
               self.matmuls)(x)
      if i == last and not self.latent_dim and self.code_activation is not None:
        return self.code_activation(x)
      x = self.activation(x)
      if self.dropout and (i < last or self.latent_dim):
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if self.latent_dim:
      x = dense(self.latent_dim, self.dtype, self.matmuls, "code")(x.reshape(x.shape[0], -1))
      if self.code_activation is not None:
        x = self.code_activation(x)
    return x


class ConvDecoder(nn.Module):
  """Dense to a small grid, stride-2 transposed convolutions up, then logits.

  The output is cropped to ``image_shape`` (the upsampled grid is never smaller).
  Dropout (rate ``dropout``, when ``train``) follows every hidden layer.
  """

  channels: Sequence[int]
  image_shape: tuple[int, int, int]
  latent_dim: int
  kernel_size: int = 3
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32  # Computation dtype; parameters stay float32.
  conv_impl: str = "matmul"
  matmuls: str = "xla"  # Who computes the products (:mod:`flaxae.kernels`).

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    height, width, out_ch = self.image_shape
    levels = len(self.channels)
    h, w = downsampled(height, levels), downsampled(width, levels)
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y) if self.dropout else y
    if self.latent_dim:
      grid = dense(h * w * self.channels[-1], self.dtype, self.matmuls, "grid")
      z = drop(self.activation(grid(z)))
      z = z.reshape(z.shape[0], h, w, self.channels[-1])
    for i, ch in enumerate(reversed(self.channels)):
      z = drop(self.activation(conv_transpose(
          self.conv_impl, ch, self.kernel_size, 2, self.dtype, f"deconv_{i}",
          self.matmuls)(z)))
    z = conv(self.conv_impl, out_ch, self.kernel_size, 1, self.dtype, "logits",
             self.matmuls)(z)
    return z[:, :height, :width, :]
