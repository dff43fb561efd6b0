"""The autoencoder module: an encoder and a decoder, nothing else.

Objectives (losses, noise, extra heads) live in :mod:`flaxae.objectives`; the
module only knows how to ``encode`` and ``decode``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flaxae.models.conv import ConvDecoder, ConvEncoder
from flaxae.models.dense import DenseDecoder, DenseEncoder
from flaxae.models.registry import activation_fn


class Autoencoder(nn.Module):
  """Encoder and decoder for inputs of shape ``(B, *feature_shape)``.

  The dense backbone flattens its input and reshapes its output, so both
  backbones take and return the data's own shape. ``decode`` returns logits.

  Attributes:
    arch: ``dense`` or ``conv``.
    feature_shape: Shape of one example, ``(H, W, C)`` or ``(D,)``.
    widths: Dense widths (hidden..., code).
    channels: Conv channels.
    latent_dim: Conv code size (0: spatial code).
    kernel_size: Conv kernel size.
    activation: Name of the hidden activation.
  """

  arch: str
  feature_shape: tuple[int, ...]
  widths: Sequence[int] = (128, 32)
  channels: Sequence[int] = (32, 64)
  latent_dim: int = 32
  kernel_size: int = 3
  activation: str = "relu"

  def setup(self):
    act = activation_fn(self.activation)
    if self.arch == "dense":
      num_features = 1
      for s in self.feature_shape:
        num_features *= s
      self.encoder = DenseEncoder(tuple(self.widths), act)
      self.decoder = DenseDecoder(
          tuple(reversed(self.widths[:-1])), num_features, act)
    else:
      self.encoder = ConvEncoder(
          tuple(self.channels), self.latent_dim, self.kernel_size, act)
      self.decoder = ConvDecoder(
          tuple(self.channels), tuple(self.feature_shape), self.latent_dim,
          self.kernel_size, act)

  def encode(self, x: jnp.ndarray) -> jnp.ndarray:
    """``(B, *feature_shape)`` inputs → ``(B, *code_shape)`` codes."""
    if self.arch == "dense":
      x = x.reshape(x.shape[0], -1)
    return self.encoder(x)

  def decode(self, z: jnp.ndarray) -> jnp.ndarray:
    """``(B, *code_shape)`` codes → ``(B, *feature_shape)`` logits."""
    logits = self.decoder(z)
    return logits.reshape(logits.shape[0], *self.feature_shape)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Reconstruction logits of ``x``."""
    return self.decode(self.encode(x))
