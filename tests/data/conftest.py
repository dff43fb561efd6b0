"""Fixtures for the data tests: the real shared sets and small synthetic folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flaxae.config import DataConfig
from flaxae.data import Dataset, load_dataset, write_idx

from tests.data.helpers import FASHION_DIR, MNIST_TEST_DIR, IdxFolderFactory, make_images


def _load_shared(folder: Path, name: str) -> Dataset:
  if not folder.is_dir():
    pytest.skip(f"shared data folder {folder} is not here")
  return load_dataset(DataConfig(name=name, dir=str(folder)), seed=0)


@pytest.fixture(scope="session")
def fashion() -> Dataset:
  """Full Fashion-MNIST (60k/10k), loaded once per session."""
  return _load_shared(FASHION_DIR, "fashion_mnist")


@pytest.fixture(scope="session")
def mnist_test() -> Dataset:
  """The MNIST test split, split 8,000/2,000 with seed 0, loaded once."""
  return _load_shared(MNIST_TEST_DIR, "mnist")


@pytest.fixture
def idx_folder(tmp_path: Path) -> IdxFolderFactory:
  """Writes a small MNIST-layout folder; returns its path.

  Call as ``idx_folder(train=12, test=5, gz=True, labels=True, name="mnist")``;
  ``train=0`` or ``test=0`` leaves that part out.
  """

  def make(train: int = 12, test: int = 5, *, gz: bool = True, labels: bool = True,
           folder: Path | None = None) -> Path:
    folder = folder or tmp_path / "idx"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for part, n, seed in (("train", train, 1), ("t10k", test, 2)):
      if not n:
        continue
      write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", make_images(n, seed=seed))
      if labels:
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}",
                  (np.arange(n) % 10).astype(np.uint8))
    return folder

  return make
