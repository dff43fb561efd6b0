"""Codes as features: embeddings, linear probes and clustering.

The classic test of a representation: a linear classifier (logistic
regression) on the code, against the same classifier on the raw pixels and on
the pixels reduced by PCA to the code's size; and k-means on the code, scored
against the labels by NMI and ARI.

>>> run = flaxae.load("runs/fashion")
>>> ds = load_dataset(run.config.data)
>>> probe_table(run, ds)        # {"code": 0.83, "pca": 0.80, "raw": 0.84, ...}
"""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Any

import numpy as np

from flaxae.api import Run, as_run
from flaxae.apps import arrays
from flaxae.data import Dataset
from flaxae.errors import DataError


def _one_thread():
  """scikit-learn on one thread: its OpenMP pool spins against JAX's threads
  (k-means and t-SNE run 10–50× slower beside them)."""
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
  return threadpool_limits(1)


def embed(run: Run, x: np.ndarray) -> np.ndarray:
  """Codes ``(N, D)`` float32 of examples ``x`` (a spatial code is flattened)."""
  z = run.encode(x)
  return z.reshape(len(z), math.prod(z.shape[1:]))  # (-1 is undefined for no examples.)


def embed_file(run: Run | str | os.PathLike, input_path: str | os.PathLike,
               output_path: str | os.PathLike, overwrite: bool = False,
               seed_index: int | None = None) -> np.ndarray:
  """Writes the codes of the examples in ``input_path`` to ``output_path`` (.npy);
  ``seed_index``: which model of a run of several seeds (None: a Run's own,
  a directory's first)."""
  arrays.check_array_output(output_path, overwrite)
  x = arrays.read_array(input_path)
  run = as_run(run, seed_index)
  z = embed(run, x)
  arrays.write_array(output_path, z, overwrite)
  return z


def _flat(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x.reshape(len(x), -1)


def _labels(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
  if ds.train_y is None or ds.test_y is None:
    raise DataError(f"data set {ds.name!r} has no labels; probes and clustering need them")
  return ds.train_y, ds.test_y


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, *, c: float = 1.0, max_iter: int = 500) -> float:
  """Test accuracy of a standardised, L2-regularised logistic regression."""
  # pylint: disable=import-outside-toplevel
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.preprocessing import StandardScaler
  clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
  with warnings.catch_warnings(), _one_thread():
    warnings.simplefilter("ignore", ConvergenceWarning)
    clf.fit(_flat(train_x), train_y)
    return float(clf.score(_flat(test_x), test_y))


def pca(train_x: np.ndarray, test_x: np.ndarray, dim: int,
        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Both sets projected on the training set's first ``dim`` principal
  components (at most as many as the training set has examples or features:
  a code wider than the image gets the whole PCA basis)."""
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
  flat = _flat(train_x)
  with _one_thread():
    model = PCA(n_components=min(dim, *flat.shape), random_state=seed).fit(flat)
    return model.transform(flat), model.transform(_flat(test_x))


def cluster_scores(features: np.ndarray, labels: np.ndarray, n_clusters: int | None = None,
                   seed: int = 0) -> dict[str, float]:
  """k-means (k = number of classes) on ``features``: NMI and ARI against ``labels``."""
  # pylint: disable=import-outside-toplevel
  from sklearn.cluster import KMeans
  from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
  k = n_clusters or len(np.unique(labels))
  with _one_thread():
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(_flat(features))
  return {"nmi": float(normalized_mutual_info_score(labels, pred)),
          "ari": float(adjusted_rand_score(labels, pred))}


def probe_table(run: Run, ds: Dataset, *, c: float = 1.0, max_iter: int = 500,
                seed: int = 0) -> dict[str, Any]:
  """Linear-probe test accuracy of the code, of PCA to the code's size, and of
  the raw pixels; with the seconds each took and the dimensions."""
  train_y, test_y = _labels(ds)
  dim = embed(run, ds.train_x[:1]).shape[1]
  out: dict[str, Any] = {"dim": dim, "raw_dim": int(np.prod(ds.feature_shape))}
  start = time.perf_counter()
  code_tr, code_te = embed(run, ds.train_x), embed(run, ds.test_x)
  out["code"] = linear_probe(code_tr, train_y, code_te, test_y, c=c, max_iter=max_iter)
  out["code_seconds"] = time.perf_counter() - start
  start = time.perf_counter()
  pca_tr, pca_te = pca(ds.train_x, ds.test_x, dim, seed)
  out["pca_dim"] = int(pca_tr.shape[1])
  out["pca"] = linear_probe(pca_tr, train_y, pca_te, test_y, c=c, max_iter=max_iter)
  out["pca_seconds"] = time.perf_counter() - start
  start = time.perf_counter()
  out["raw"] = linear_probe(ds.train_x, train_y, ds.test_x, test_y, c=c, max_iter=max_iter)
  out["raw_seconds"] = time.perf_counter() - start
  return out


def clustering_table(run: Run, ds: Dataset, seed: int = 0) -> dict[str, dict[str, float]]:
  """k-means NMI / ARI on the test set's codes, its PCA projection to the code's
  size (fitted on the training set) and its raw pixels."""
  _, test_y = _labels(ds)
  code_te = embed(run, ds.test_x)
  _, pca_te = pca(ds.train_x, ds.test_x, code_te.shape[1], seed)
  return {"code": cluster_scores(code_te, test_y, seed=seed),
          "pca": cluster_scores(pca_te, test_y, seed=seed),
          "raw": cluster_scores(ds.test_x, test_y, seed=seed)}
