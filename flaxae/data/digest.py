"""Digests of a run's data, one per check that compares data.

* :func:`data_digest` samples 64 training rows and the first 64 test rows
  (cheap, every start): a run directory resumes, and a compressed file's
  probability model is reused, only on the data they were made from
  (``run.json``'s ``data_digest``).
* :func:`test_set_digest` reads every value of the test set: ``flaxae eval``
  refuses a test set changed anywhere, since a run's figures are computed on
  it (``run.json``'s ``test_digest``).
* :func:`content_digest` reads every stored byte of the training and test
  data (one pass at start-up): the processes of a job must all hold the same
  data, not only the same sampled rows.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from flaxae.data import stream


def data_digest(train_set: Any, test_x: np.ndarray) -> str:
  """64 training rows spread over the set and the first 64 test rows, as the
  model sees them (float32): not resumed on other data of the same shape."""
  n = len(train_set)
  positions = np.unique(np.linspace(0, n - 1, min(n, 64)).astype(np.int64))
  rows = train_set.rows(positions) if isinstance(train_set, stream.MappedSet) else (
      train_set[positions])
  h = hashlib.blake2b(digest_size=8)
  for part in (rows, test_x[:64]):
    part = np.ascontiguousarray(part, np.float32)
    h.update(repr(part.shape).encode())
    h.update(part.tobytes())
  return h.hexdigest()


def test_set_digest(test_x: np.ndarray) -> str:
  """Every value of the test set, as the model sees them (float32)."""
  x = np.ascontiguousarray(test_x, np.float32)
  h = hashlib.blake2b(repr(x.shape).encode(), digest_size=8)
  h.update(x.data)
  return h.hexdigest()


test_set_digest.__test__ = False  # A library function, not a test to collect.


def content_digest(train_set: Any, test_x: np.ndarray) -> bytes:
  """Every byte of the training set as stored (a streamed one's whole mapped
  file and the rows it uses), and the test set (:func:`test_set_digest`).

  ≈0.1 s for Fashion-MNIST; for a streamed file, one pass over it, less than
  an epoch's reading.
  """
  h = hashlib.blake2b(digest_size=16)
  if isinstance(train_set, stream.MappedSet):
    arrays = (train_set.array, train_set.indices)
  else:
    arrays = (np.asarray(train_set),)
  for a in arrays:
    h.update(f"{a.dtype.str}{a.shape}".encode())
    rows = max(1, (64 << 20) // max(1, a[:1].nbytes))  # 64 MiB at a time.
    for i in range(0, len(a), rows):
      h.update(np.ascontiguousarray(a[i:i + rows]).data)
  h.update(test_set_digest(test_x).encode())
  return h.digest()
