"""Shared paths and synthetic data for the data tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FASHION_DIR = SHARED_DATA / "fashion_mnist"
MNIST_TEST_DIR = SHARED_DATA / "mnist_test"

# ``idx_folder(train=12, test=5, *, gz=True, labels=True, folder=None) -> Path``.
IdxFolderFactory = Callable[..., Path]


def make_images(n: int, h: int = 4, w: int = 5, seed: int = 0) -> np.ndarray:
  """``n`` random uint8 images whose first pixel is the example's index mod 256."""
  x = np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)
  x[:, 0, 0] = np.arange(n) % 256
  return x
