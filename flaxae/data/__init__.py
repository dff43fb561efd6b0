"""Data sets as numpy arrays: float32 in [0, 1], seeded train/test splits.

Sources (``data.name``): ``digits`` (scikit-learn, the offline default),
``mnist`` / ``fashion_mnist`` / ``idx`` (a folder of IDX files), ``npy`` (a
``.npy`` / ``.npz`` file) and ``tfds:<name>`` (TensorFlow Datasets, prepared
locally). Importing this package needs numpy only: no JAX, scikit-learn or TFDS.
"""

from __future__ import annotations

from flaxae.data.dataset import Dataset as Dataset
from flaxae.data.dataset import as_images as as_images
from flaxae.data.dataset import binarize as binarize
from flaxae.data.dataset import flatten as flatten
from flaxae.data.dataset import load_dataset as load_dataset
from flaxae.data.dataset import normalize as normalize
from flaxae.data.dataset import normalize_labels as normalize_labels
from flaxae.data.dataset import split_indices as split_indices
from flaxae.data.idx import read_idx as read_idx
from flaxae.data.idx import write_idx as write_idx
from flaxae.data.sources import known_names as known_names

__all__ = [
    "Dataset", "as_images", "binarize", "flatten", "known_names", "load_dataset",
    "normalize", "normalize_labels", "read_idx", "split_indices", "write_idx",
]
