"""The autoencoder module: an encoder and a decoder, nothing else.

Objectives (losses, noise, extra heads) live in :mod:`flaxae.objectives`; the
module only knows how to ``encode`` and ``decode``. Every method takes
``train`` (default False): it turns dropout on, which then needs a
``"dropout"`` key in ``rngs``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flaxae.models.conv import ConvDecoder, ConvEncoder, downsampled
from flaxae.models.dense import DenseDecoder, DenseEncoder
from flaxae.models.registry import activation_fn


def _identity(x: jnp.ndarray) -> jnp.ndarray:
  return x


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
    code_activation: Name of the code's activation; ``linear`` for none, and
      empty for the backbone's own (linear for a dense code, the hidden
      activation for a spatial conv code).
    dropout: Dropout rate after every hidden layer in training.
    dtype: Computation dtype of the encoder and decoder (``float32`` or
      ``bfloat16``); parameters stay float32, and inputs, codes and logits
      cross the module's boundary as float32, so losses, the posterior and
      the codebook are computed in float32 (mixed precision).
    conv_impl: ``matmul`` (:mod:`flaxae.models.layers`) or ``xla`` (Flax's
      ``lax`` convolutions): the same parameters and function.
    matmuls: Who computes the layers' float32 products (dense layers and the
      matmul forms of convolutions): ``xla``, or ``mkl`` (:mod:`flaxae.kernels`:
      MKL on CPU, XLA's elsewhere); the same parameters and function.
  """

  arch: str
  feature_shape: tuple[int, ...]
  widths: Sequence[int] = (128, 32)
  channels: Sequence[int] = (32, 64)
  latent_dim: int = 32
  kernel_size: int = 3
  activation: str = "relu"
  code_activation: str = ""
  dropout: float = 0.0
  dtype: str = "float32"
  conv_impl: str = "matmul"
  matmuls: str = "xla"

  @property
  def code_shape(self) -> tuple[int, ...]:
    """Shape of one example's code: ``(width,)`` or ``(h, w, channels)``."""
    if self.arch == "dense":
      return (self.widths[-1],)
    if self.latent_dim:
      return (self.latent_dim,)
    levels = len(self.channels)
    return (downsampled(self.feature_shape[0], levels),
            downsampled(self.feature_shape[1], levels), self.channels[-1])

  def _encoder(self, code_factor: int = 1) -> nn.Module:
    """The backbone's encoder, its code ``code_factor`` times wider."""
    act = activation_fn(self.activation)
    if not self.code_activation:
      code_act = None
    elif self.code_activation == "linear":
      code_act = _identity
    else:
      code_act = activation_fn(self.code_activation)
    if self.arch == "dense":
      widths = tuple(self.widths)
      widths = widths[:-1] + (widths[-1] * code_factor,)
      return DenseEncoder(widths, act, code_act, self.dropout, dtype=self.dtype,
                          matmuls=self.matmuls)
    channels, latent_dim = tuple(self.channels), self.latent_dim * code_factor
    if not latent_dim:
      channels = channels[:-1] + (channels[-1] * code_factor,)
    return ConvEncoder(channels, latent_dim, self.kernel_size, act, code_act,
                       self.dropout, dtype=self.dtype, conv_impl=self.conv_impl,
                       matmuls=self.matmuls)

  def _decoder(self) -> nn.Module:
    act = activation_fn(self.activation)
    if self.arch == "dense":
      num_features = 1
      for s in self.feature_shape:
        num_features *= s
      return DenseDecoder(tuple(reversed(self.widths[:-1])), num_features, act,
                          self.dropout, dtype=self.dtype, matmuls=self.matmuls)
    return ConvDecoder(tuple(self.channels), tuple(self.feature_shape),
                       self.latent_dim, self.kernel_size, act, self.dropout,
                       dtype=self.dtype, conv_impl=self.conv_impl, matmuls=self.matmuls)

  def setup(self):
    self.encoder = self._encoder()
    self.decoder = self._decoder()

  def _flat(self, x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape(x.shape[0], -1) if self.arch == "dense" else x

  def _encoder_output(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """The encoder's float32 output for ``x``, computed in ``dtype``."""
    return self.encoder(self._flat(x).astype(self.dtype), train).astype(jnp.float32)

  def encode(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """``(B, *feature_shape)`` inputs → ``(B, *code_shape)`` codes."""
    return self._encoder_output(x, train)

  def decode(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """``(B, *code_shape)`` codes → ``(B, *feature_shape)`` float32 logits."""
    logits = self.decoder(z.astype(self.dtype), train).astype(jnp.float32)
    return logits.reshape(logits.shape[0], *self.feature_shape)

  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Reconstruction logits of ``x``."""
    return self.decode(self.encode(x, train), train)
