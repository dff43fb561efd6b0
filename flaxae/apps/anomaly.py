"""Anomaly detection by reconstruction error, as a scikit-learn outlier detector.

:class:`AutoencoderDetector` trains any flaxae autoencoder (``model.kind``
plain, sparse, denoising, contractive, vae, vq; dense or conv) on the
examples given to ``fit`` and scores new examples by how badly it
reconstructs them. It follows scikit-learn's outlier-detector conventions
(those of ``IsolationForest``), so it works in pipelines, ``clone`` and
``check_estimator``:

- ``score_samples(X)``: the *negative* reconstruction error (higher: more normal);
- ``decision_function(X) = score_samples(X) - offset_`` (negative: outlier);
- ``predict(X)``: ``-1`` for outliers, ``+1`` for inliers.

PyOD's names are there too, with PyOD's sign (higher: more abnormal):
``anomaly_score(X)`` is the reconstruction error, ``decision_scores_`` the
training set's, ``threshold_`` the error above which an example is an
outlier (the ``1 - contamination`` quantile of ``decision_scores_``) and
``labels_`` the training set's 0/1 labels (1: outlier).

>>> det = AutoencoderDetector(contamination=0.05).fit(normal_images)
>>> det.predict(new_images)        # -1 outlier, +1 inlier
>>> det.anomaly_score(new_images)  # reconstruction errors
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from flaxae import io
from flaxae.api import Run, as_run, layouts
from flaxae.api import fit
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.errors import ConfigError, DataError, FlaxaeError, OutputError, ShapeError

METRICS = ("mse", "l1", "bce")
PREPROCESSING = ("auto", "minmax", "none")
_CHUNK = 256  # Scores are computed in chunks of this fixed shape: batch-invariant.
_EVAL_EXAMPLES = 256
# A detector's run is short: one checkpoint, when training ends.
_ONLY_AT_THE_END = CheckpointConfig(every_steps=2**62, keep=1)


class NotFittedError(FlaxaeError, SklearnNotFittedError):
  """A detector was used before ``fit`` (also scikit-learn's ``NotFittedError``)."""


def _validated(estimator: BaseEstimator, X: Any,  # pylint: disable=invalid-name
               reset: bool) -> np.ndarray:
  """scikit-learn's checks of ``X``, their ``ValueError`` as flaxae's (still
  ``ValueError``s): :class:`ShapeError` for the width, else :class:`DataError`."""
  if np.iscomplexobj(X):  # (scikit-learn's message prints the whole array.)
    raise DataError("X must be real numbers, got complex ones")
  try:
    x = validate_data(estimator, X, allow_nd=True, dtype="numeric", reset=reset,
                      ensure_all_finite=False)
  except FlaxaeError:
    raise
  except (ValueError, TypeError) as e:
    error = ShapeError if "features" in str(e) or "dimension" in str(e) else DataError
    message = " ".join(str(e).split())
    raise error(message if len(message) <= 300 else message[:300] + " ...") from e
  if not np.isfinite(x).all():
    raise DataError("X contains NaN or Inf")
  return x


def reconstruction_error(x: np.ndarray, recon: np.ndarray, metric: str = "mse") -> np.ndarray:
  """Per-example error ``(N,)`` float64 between ``x`` and ``recon`` ``(N, ...)``."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  recon = np.asarray(recon, np.float64).reshape(len(recon), -1)
  if metric == "mse":
    return np.mean((x - recon) ** 2, axis=1)
  if metric == "l1":
    return np.mean(np.abs(x - recon), axis=1)
  if metric == "bce":
    p = np.clip(recon, 1e-7, 1.0 - 1e-7)
    return -np.mean(x * np.log(p) + (1.0 - x) * np.log1p(-p), axis=1)
  raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def run_scores(run: Run, x: np.ndarray, metric: str = "mse") -> np.ndarray:
  """Reconstruction errors of examples ``x`` (in [0, 1]) under a trained run.

  Values outside [0, 1] are clipped for the network, but the error is taken
  against the unclipped values, so they still count. The examples go through
  the network in zero-padded chunks of a fixed size, which makes each score
  independent of the other examples in ``x``.
  """
  x = np.asarray(x, np.float32)
  clipped = np.clip(x, 0.0, 1.0)
  recon = []
  for lo in range(0, len(x), _CHUNK):
    chunk = clipped[lo:lo + _CHUNK]
    n = len(chunk)
    padded = np.concatenate([chunk, np.zeros((_CHUNK - n, *chunk.shape[1:]), np.float32)])
    recon.append(run.reconstruct(padded)[:n])
  recon = np.concatenate(recon) if recon else np.zeros((0, *run.feature_shape), np.float32)
  return reconstruction_error(x, recon, metric)


class AutoencoderDetector(OutlierMixin, BaseEstimator):
  """An outlier detector: an autoencoder's reconstruction error, thresholded.

  Args:
    model: The autoencoder (any ``kind`` and ``arch``; default: dense 128-32).
    train: How to train it (default: ``TrainConfig(epochs=50)``). The batch
      size is lowered to fit small data sets, rounded to the device count.
    contamination: The expected share of outliers in the training data, in
      (0, 0.5]; sets ``threshold_``.
    metric: Per-example error: ``mse``, ``l1`` or ``bce`` (for data in [0, 1]).
    preprocessing: ``auto`` (uint8 is divided by 255, data already in
      [0, 1] is used as is, anything else is scaled per feature to [0, 1] by
      the training minimum and maximum), ``minmax`` or ``none`` (uint8, or
      data in [0, 1]).
    random_state: Seeds the initialisation and data order (``train.seed`` if None).
    run_dir: Keep the trained run (checkpoints, metrics, its training data)
      in this new folder; by default it lives in a temporary folder that is
      removed after ``fit``.

  Attributes:
    run_: The trained :class:`~flaxae.api.Run` (weights on the host).
    threshold_: Reconstruction error above which an example is an outlier.
    offset_: ``-threshold_``, so that ``decision_function = score_samples - offset_``.
    decision_scores_: Reconstruction errors of the training examples.
    labels_: 1 for the training examples above ``threshold_``, else 0.
    n_features_in_: Features per example seen in ``fit``.
    feature_shape_: Shape of one example, as given to ``fit``.
    preprocessing_: The preprocessing used: ``minmax`` or ``none``.
    data_min_, data_range_: The per-feature scaling of ``minmax`` (else None).
  """

  def __init__(self, model: ModelConfig | None = None, train: TrainConfig | None = None,
               contamination: float = 0.1, metric: str = "mse",
               preprocessing: str = "auto", random_state: int | None = None,
               run_dir: str | None = None):
    self.model = model
    self.train = train
    self.contamination = contamination
    self.metric = metric
    self.preprocessing = preprocessing
    self.random_state = random_state
    self.run_dir = run_dir

  # --- Fitting ---------------------------------------------------------------

  def _check_params(self) -> None:
    if isinstance(self.contamination, bool) or not isinstance(
        self.contamination, (int, float, np.floating)) or not (
        0.0 < self.contamination <= 0.5):
      raise ConfigError(f"contamination must be in (0, 0.5], got {self.contamination!r}")
    if self.metric not in METRICS:
      raise ConfigError(f"unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
    if self.preprocessing not in PREPROCESSING:
      raise ConfigError(f"unknown preprocessing {self.preprocessing!r}; known: "
                        f"{', '.join(PREPROCESSING)}")

  def _train_config(self, n: int) -> TrainConfig:
    cfg = self.train or TrainConfig()
    devices = cfg.num_devices or jax.device_count()
    batch = min(cfg.batch_size, n)
    batch -= batch % devices
    num_devices = cfg.num_devices
    if batch == 0:  # Fewer examples than devices: train on one.
      batch, num_devices = min(cfg.batch_size, n), 1
    if self.random_state is None:
      seed = cfg.seed
    elif isinstance(self.random_state, (int, np.integer)):
      seed = int(self.random_state) % 2**31
    else:
      seed = int(check_random_state(self.random_state).randint(2**31 - 1))
    return dataclasses.replace(cfg, batch_size=batch, num_devices=num_devices, seed=seed)

  def _scale(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if self.preprocessing_ == "minmax":
      x = (x - self.data_min_) / self.data_range_
    return x

  def fit(self, X: Any, y: Any = None) -> AutoencoderDetector:  # pylint: disable=invalid-name
    """Trains the autoencoder on ``X`` ``(N, ...)`` and sets the threshold.

    Args:
      X: Training examples, mostly normal; vectors ``(N, D)`` or images.
      y: Ignored.
    """
    del y
    self._check_params()
    x = _validated(self, X, reset=True)
    preprocessing = self.preprocessing
    if x.dtype == np.uint8 and preprocessing != "minmax":
      x, preprocessing = x / 255.0, "none"  # Images: 0–255 is [0, 1].
    x = np.asarray(x, np.float64)
    if preprocessing == "auto":
      preprocessing = "none" if x.min() >= 0.0 and x.max() <= 1.0 else "minmax"
    self.preprocessing_ = preprocessing
    self.feature_shape_ = tuple(x.shape[1:])
    if preprocessing == "minmax":
      self.data_min_ = x.min(axis=0)
      span = x.max(axis=0) - self.data_min_
      self.data_range_ = np.where(span > 0, span, 1.0)
    else:
      self.data_min_ = self.data_range_ = None
    scaled = self._scale(x)
    if preprocessing == "none" and (scaled.min() < 0.0 or scaled.max() > 1.0):
      raise ConfigError(
          "preprocessing='none' needs data in [0, 1]; use preprocessing='minmax' or 'auto'")
    self.run_ = self._fit_run(scaled.astype(np.float32))
    self.decision_scores_ = run_scores(self.run_, scaled, self.metric)
    self._set_threshold(self.decision_scores_)
    return self

  def _fit_run(self, x: np.ndarray) -> Run:
    """Trains through ``flaxae.train`` on ``x`` written to a ``.npz`` file."""
    if self.run_dir is None:
      with tempfile.TemporaryDirectory(prefix="flaxae-detector-") as tmp:
        return self._train_in(Path(tmp) / "run", x)
    run_dir = Path(self.run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
      raise OutputError(
          f"run_dir {run_dir} is not empty; give the detector a new folder")
    return self._train_in(run_dir, x)

  def _train_in(self, run_dir: Path, x: np.ndarray) -> Run:
    io.make_dir(run_dir)
    data_path = run_dir / "train_data.npz"
    with io.atomic_path(data_path) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, x_train=x, x_test=x[:_EVAL_EXAMPLES])
    cfg = Config(data=DataConfig(name="npy", path=str(data_path)),
                 model=self.model or ModelConfig(), train=self._train_config(len(x)),
                 checkpoint=_ONLY_AT_THE_END, run_dir=str(run_dir))
    run = fit(cfg, progress=False)
    return Run(run.dir, run.config, run.model, jax.device_get(run.variables),
               run.history)

  def _set_threshold(self, errors: np.ndarray) -> None:
    self.threshold_ = float(np.percentile(errors, 100.0 * (1.0 - self.contamination)))
    self.offset_ = -self.threshold_
    self.labels_ = (errors > self.threshold_).astype(np.int64)

  @classmethod
  def from_run(cls, run: Run | str | os.PathLike, X: Any = None,
               contamination: float = 0.1, metric: str = "mse",
               threshold: float | None = None, seed_index: int | None = None
               ) -> AutoencoderDetector:
    """A fitted detector from an already trained run.

    Args:
      run: The run (or its directory).
      X: Normal examples (in [0, 1] or uint8) that set the threshold; by
        default the run's own training set.
      contamination: The share of ``X`` above the threshold.
      metric: The per-example error.
      threshold: Use this threshold instead (``X`` and ``contamination`` unused;
        ``decision_scores_`` and ``labels_`` are then not set).
      seed_index: Which model of a run of several seeds (None: a Run's own,
        a directory's first).
    """
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number))
        or not np.isfinite(threshold)):
      raise ConfigError(f"the threshold must be a finite number, got {threshold!r}")
    run = as_run(run, seed_index)
    det = cls(model=run.config.model, train=run.config.train, contamination=contamination,
              metric=metric, preprocessing="none")
    det._check_params()  # pylint: disable=protected-access
    det.run_ = run
    det.preprocessing_, det.data_min_, det.data_range_ = "none", None, None
    det.feature_shape_ = tuple(run.feature_shape)
    det.n_features_in_ = det.feature_shape_[0]
    if threshold is not None:
      det.threshold_, det.offset_ = float(threshold), -float(threshold)
      return det
    if X is None:
      from flaxae.data import load_dataset  # pylint: disable=import-outside-toplevel
      X = load_dataset(run.config.data).train_x
    det.decision_scores_ = det.anomaly_score(X)
    det._set_threshold(det.decision_scores_)  # pylint: disable=protected-access
    return det

  # --- Scoring ---------------------------------------------------------------

  def _check_fitted(self) -> None:
    if not hasattr(self, "run_"):
      raise NotFittedError(
          f"this {type(self).__name__} is not fitted yet; call fit(X) with training "
          "examples first")

  def _prepared(self, X: Any) -> np.ndarray:
    self._check_fitted()
    if isinstance(X, np.ndarray):
      if self.preprocessing_ == "none" and X.dtype == np.uint8:
        X = X / 255.0
      accepted = layouts(self.feature_shape_)
      if X.shape in accepted:
        raise ShapeError(
            f"X of shape {X.shape} is one example; the detector takes a batch of "
            f"examples of shape {self.feature_shape_} (X[None] for one)")
      if X.ndim >= 2 and X.shape[1:] != self.feature_shape_:
        if X.shape[1:] in accepted:
          X = X.reshape(len(X), *self.feature_shape_)  # (N, 784) for (28, 28, 1), or back.
        elif len(self.feature_shape_) > 1:
          raise ShapeError(
              f"inputs of shape {X.shape} do not fit this detector, which takes a batch of "
              f"examples of shape {self.feature_shape_} (or flattened, or one channel "
              "without its axis)")
    x = _validated(self, X, reset=False)
    if tuple(x.shape[1:]) != self.feature_shape_:
      raise ShapeError(
          f"X has examples of shape {tuple(x.shape[1:])}, but {type(self).__name__} "
          f"was fitted on examples of shape {self.feature_shape_}")
    if self.preprocessing_ == "none" and x.size and (x.min() < 0.0 or x.max() > 1.0):
      raise DataError(  # As the model was trained: int64 0-255 would score ≈ 1e4.
          f"X has values in [{x.min():.4g}, {x.max():.4g}]; this detector takes uint8 "
          "(0-255) or values in [0, 1]")
    return self._scale(x)

  def anomaly_score(self, X: Any) -> np.ndarray:  # pylint: disable=invalid-name
    """Reconstruction errors ``(N,)``, higher for more abnormal examples (PyOD's
    ``decision_function``)."""
    x = self._prepared(X)
    return run_scores(self.run_, x, self.metric)

  def score_samples(self, X: Any) -> np.ndarray:  # pylint: disable=invalid-name
    """The negative reconstruction error: the lower, the more abnormal."""
    return -self.anomaly_score(X)

  def decision_function(self, X: Any) -> np.ndarray:  # pylint: disable=invalid-name
    """``score_samples(X) - offset_``: negative for outliers."""
    return self.score_samples(X) - self.offset_

  def predict(self, X: Any) -> np.ndarray:  # pylint: disable=invalid-name
    """``-1`` for outliers (error above ``threshold_``), ``+1`` for inliers."""
    return np.where(self.decision_function(X) >= 0, 1, -1).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Detection:
  """Scores and labels of examples.

  Attributes:
    scores: ``(N,)`` reconstruction errors (higher: more abnormal).
    outliers: ``(N,)`` 1 for an outlier (score above ``threshold``), else 0.
    threshold: The score above which an example is an outlier.
  """

  scores: np.ndarray
  outliers: np.ndarray
  threshold: float


def detect(run: Run | str | os.PathLike, x: Any, contamination: float = 0.1,
           threshold: float | None = None, metric: str = "mse",
           seed_index: int | None = None) -> Detection:
  """Scores ``x`` with a trained run (of a run directory of several seeds, model
  ``seed_index``); the threshold is ``threshold`` if given, else the
  ``1 - contamination`` quantile of the scores of the run's training set."""
  det = AutoencoderDetector.from_run(run, contamination=contamination, metric=metric,
                                     threshold=threshold, seed_index=seed_index)
  x = np.asarray(x)
  if x.shape in layouts(det.feature_shape_):  # One example, as the Run's methods take it.
    x = x[None]
  scores = det.anomaly_score(x)
  return Detection(scores, (scores > det.threshold_).astype(np.int64), det.threshold_)


def write_detection(path: str | os.PathLike, detection: Detection,
                    overwrite: bool = False) -> None:
  """Writes ``index,score,outlier`` rows (``.csv``) or an ``(N, 2)`` array (``.npy``)."""
  path = check_detection_output(path, overwrite)
  if path.suffix == ".csv":
    rows = "".join(f"{i},{s:.9g},{o}\n" for i, (s, o) in
                   enumerate(zip(detection.scores, detection.outliers)))
    io.write_text(path, "index,score,outlier\n" + rows, overwrite)
  else:
    from flaxae.apps import arrays  # pylint: disable=import-outside-toplevel
    arrays.write_array(path, np.stack([detection.scores, detection.outliers], 1), overwrite)


def check_detection_output(path: str | os.PathLike, overwrite: bool) -> Path:
  """Checks that ``path`` is a writable ``.csv`` or ``.npy`` name."""
  path = io.check_output(path, overwrite)
  if path.suffix not in (".csv", ".npy"):
    raise OutputError(f"cannot write {path}: name the output FILE.csv or FILE.npy")
  return path
