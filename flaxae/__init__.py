"""flaxae: autoencoders in JAX/Flax, fast, correct and practical."""

from flaxae.api import Run, decode, encode, fit, load, reconstruct
from flaxae.config import (CheckpointConfig, Config, DataConfig, ModelConfig,
                           TrainConfig)
from flaxae.errors import FlaxaeError

__version__ = "0.1.0"

__all__ = [
    "CheckpointConfig", "Config", "DataConfig", "FlaxaeError", "ModelConfig",
    "Run", "TrainConfig", "decode", "encode", "fit", "load", "reconstruct",
]
