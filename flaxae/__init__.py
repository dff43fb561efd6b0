"""flaxae: autoencoders in JAX/Flax, fast, correct and practical.

The public names below are imported on first use (PEP 562), so that
``import flaxae.timing`` (used by the PyTorch and Keras benchmark processes)
and ``flaxae --help`` do not load JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Run": "flaxae.api", "decode": "flaxae.api", "encode": "flaxae.api",
    "fit": "flaxae.api", "load": "flaxae.api", "reconstruct": "flaxae.api",
    "CheckpointConfig": "flaxae.config", "Config": "flaxae.config",
    "DataConfig": "flaxae.config", "ModelConfig": "flaxae.config",
    "TrainConfig": "flaxae.config", "FlaxaeError": "flaxae.errors",
}
__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
  from flaxae.api import Run, decode, encode, fit, load, reconstruct
  from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
  from flaxae.errors import FlaxaeError


def __getattr__(name: str) -> Any:
  if name in _PUBLIC:
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'flaxae' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted({*globals(), *_PUBLIC})
