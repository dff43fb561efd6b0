"""Autoencoder models: pure Linen modules that encode and decode.

``build_model`` picks the module for the config's ``kind`` and the backbone
for its ``arch``: :class:`Autoencoder` (plain, sparse, denoising,
contractive), :class:`VariationalAutoencoder` (vae) or :class:`VQAutoencoder`
(vq), each with a dense or convolutional encoder and decoder.
"""

from __future__ import annotations

from flaxae.config import ModelConfig
from flaxae.errors import ConfigError, ShapeError
from flaxae.models.autoencoder import Autoencoder
from flaxae.models.conv import ConvDecoder, ConvEncoder
from flaxae.models.dense import DenseDecoder, DenseEncoder
from flaxae.models.registry import ACTIVATIONS, activation_fn, check_activation
from flaxae.models.vae import VariationalAutoencoder, reparametrize, sample
from flaxae.models.vq import VQAutoencoder, VectorQuantizer, ema_codebook

__all__ = [
    "ACTIVATIONS", "Autoencoder", "ConvDecoder", "ConvEncoder", "DenseDecoder",
    "DenseEncoder", "VQAutoencoder", "VariationalAutoencoder", "VectorQuantizer",
    "activation_fn", "build_model", "check_activation", "code_activation",
    "ema_codebook", "encoder_widths", "reparametrize", "sample",
]


def encoder_widths(widths: tuple[int, ...], num_features: int) -> tuple[int, ...]:
  """Drops a leading input width: ``784,256,64`` on 784 features → ``256,64``."""
  if len(widths) > 1 and widths[0] == num_features:
    return tuple(widths[1:])
  return tuple(widths)


def code_activation(cfg: ModelConfig) -> str:
  """The code's activation for ``cfg``, ``auto`` resolved by kind.

  Returns an activation name, ``linear``, or ``""`` for the backbone's own.
  """
  name = cfg.code_activation
  if cfg.kind == "sparse" and cfg.sparsity == "kl" and name not in ("auto", "sigmoid"):
    raise ConfigError(
        f"model.sparsity=kl needs a code in (0, 1): model.code_activation must be "
        f"sigmoid (or auto), got {name}")
  if cfg.kind == "vae" and name not in ("auto", "linear"):
    raise ConfigError(
        f"model.kind=vae has a Gaussian code: model.code_activation must be linear "
        f"(or auto), got {name}")
  if name != "auto":
    return name
  if cfg.kind == "sparse":
    return "sigmoid" if cfg.sparsity == "kl" else "relu"
  if cfg.kind == "contractive":
    return "sigmoid"
  if cfg.kind in ("vae", "vq"):
    return "linear"
  return ""


def build_model(cfg: ModelConfig, feature_shape: tuple[int, ...],
                dtype: str = "float32", conv_impl: str = "matmul",
                matmuls: str = "xla") -> Autoencoder:
  """The model for examples of ``feature_shape``, as the config's kind and arch
  say, computing in ``dtype`` (``train.compute_dtype``), its convolutions in
  the form ``conv_impl`` names (``train.conv_impl``), its layers'
  products by ``matmuls`` (``xla``, or ``mkl`` for ``train.cpu_matmuls=mkl``)."""
  feature_shape = tuple(int(s) for s in feature_shape)
  num_features = 1
  for s in feature_shape:
    num_features *= s
  if cfg.arch == "conv" and len(feature_shape) != 3:
    raise ShapeError(
        f"model.arch=conv needs images (H, W, C), but the data has examples of "
        f"shape {feature_shape}; use model.arch=dense for vectors")
  if cfg.arch not in ("dense", "conv"):
    raise ConfigError(f"unknown model.arch {cfg.arch!r}; known: conv, dense")
  check_activation(cfg.activation)
  common = dict(
      arch=cfg.arch,
      feature_shape=feature_shape,
      widths=encoder_widths(tuple(cfg.widths), num_features),
      channels=tuple(cfg.channels),
      latent_dim=cfg.latent_dim,
      kernel_size=cfg.kernel_size,
      activation=cfg.activation,
      code_activation=code_activation(cfg),
      dropout=cfg.dropout,
      dtype=dtype,
      conv_impl=conv_impl,
      matmuls=matmuls,
  )
  if cfg.kind == "vae":
    return VariationalAutoencoder(**common, logvar_min=cfg.logvar_min,
                                  logvar_max=cfg.logvar_max)
  if cfg.kind == "vq":
    model = VQAutoencoder(**common, codebook_size=cfg.codebook_size,
                          codebook_dim=cfg.codebook_dim, vq_ema=cfg.vq_ema)
    width = model.code_shape[-1]
    if width % model.vector_dim:
      raise ConfigError(
          f"model.codebook_dim={cfg.codebook_dim} does not divide the code's last "
          f"axis ({width}); use a divisor of {width}, or 0 for the whole axis")
    return model
  return Autoencoder(**common)
