"""Autoencoder backbones: pure Linen modules that encode and decode."""

from __future__ import annotations

from flaxae.config import ModelConfig
from flaxae.errors import ConfigError, ShapeError
from flaxae.models.autoencoder import Autoencoder
from flaxae.models.conv import ConvDecoder, ConvEncoder
from flaxae.models.dense import DenseDecoder, DenseEncoder
from flaxae.models.registry import ACTIVATIONS, activation_fn, check_activation

__all__ = [
    "ACTIVATIONS", "Autoencoder", "ConvDecoder", "ConvEncoder", "DenseDecoder",
    "DenseEncoder", "activation_fn", "build_model", "check_activation",
    "encoder_widths",
]


def encoder_widths(widths: tuple[int, ...], num_features: int) -> tuple[int, ...]:
  """Drops a leading input width: ``784,256,64`` on 784 features → ``256,64``."""
  if len(widths) > 1 and widths[0] == num_features:
    return tuple(widths[1:])
  return tuple(widths)


def build_model(cfg: ModelConfig, feature_shape: tuple[int, ...]) -> Autoencoder:
  """The backbone for examples of ``feature_shape``, as the config says."""
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
  return Autoencoder(
      arch=cfg.arch,
      feature_shape=feature_shape,
      widths=encoder_widths(tuple(cfg.widths), num_features),
      channels=tuple(cfg.channels),
      latent_dim=cfg.latent_dim,
      kernel_size=cfg.kernel_size,
      activation=cfg.activation,
  )
