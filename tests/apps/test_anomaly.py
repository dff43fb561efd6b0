"""The anomaly detector: scikit-learn's contract, and it finds anomalies."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils import estimator_checks

from flaxae import FlaxaeError, ModelConfig, TrainConfig, cli
from flaxae.apps.anomaly import AutoencoderDetector, NotFittedError, detect
from flaxae.errors import ConfigError, OutputError, ShapeError

FAST = dict(model=ModelConfig(widths=(8, 2)), train=TrainConfig(epochs=2, batch_size=32))


@pytest.fixture(scope="module")
def one_class(digits, tmp_path_factory):
  """A detector trained on uint8 images of the digit 0 only, kept in a run_dir."""
  normal = np.rint(digits.train_x[digits.train_y == 0] * 255).astype(np.uint8)
  det = AutoencoderDetector(model=ModelConfig(widths=(32, 4)),
                            train=TrainConfig(epochs=4, batch_size=16, learning_rate=1e-2),
                            contamination=0.05, random_state=0,
                            run_dir=str(tmp_path_factory.mktemp("detector") / "run"))
  return det.fit(normal)


def test_one_class_detector_ranks_other_digits_higher(one_class, digits):
  scores = one_class.anomaly_score(digits.test_x)
  auc = roc_auc_score(digits.test_y != 0, scores)
  assert auc > 0.8, auc


def test_threshold_and_labels_follow_contamination(one_class):
  errors = one_class.decision_scores_
  assert one_class.threshold_ == pytest.approx(np.percentile(errors, 95))
  assert one_class.labels_.sum() == int(np.sum(errors > one_class.threshold_))
  assert abs(one_class.labels_.mean() - 0.05) < 0.02
  assert one_class.offset_ == -one_class.threshold_


def test_sklearn_conventions(one_class, digits):
  x = digits.test_x[:50]
  scores = one_class.score_samples(x)
  np.testing.assert_array_equal(scores, -one_class.anomaly_score(x))
  np.testing.assert_allclose(one_class.decision_function(x), scores - one_class.offset_)
  pred = one_class.predict(x)
  assert set(np.unique(pred)) <= {-1, 1} and pred.dtype.kind == "i"
  np.testing.assert_array_equal(pred == -1, one_class.anomaly_score(x) > one_class.threshold_)


def test_scores_do_not_depend_on_the_batch(one_class, digits):
  x = digits.test_x[:300]
  whole = one_class.score_samples(x)
  parts = np.concatenate([one_class.score_samples(x[i:i + 7]) for i in range(0, 300, 7)])
  np.testing.assert_array_equal(whole, parts)


def test_images_uint8_and_flat_inputs_agree(one_class, digits):
  x = digits.test_x[:20]  # (20, 8, 8, 1), as fitted.
  a = one_class.anomaly_score(x)
  np.testing.assert_array_equal(a, one_class.anomaly_score(x.reshape(20, 64)))
  np.testing.assert_array_equal(a, one_class.anomaly_score(x[..., 0]))


def test_pickle_keeps_the_predictions(one_class, digits):
  again = pickle.loads(pickle.dumps(one_class))
  np.testing.assert_array_equal(again.score_samples(digits.test_x),
                                one_class.score_samples(digits.test_x))


def test_before_fit_is_a_clear_error():
  det = AutoencoderDetector()
  for method in ("predict", "decision_function", "score_samples", "anomaly_score"):
    with pytest.raises(NotFittedError, match="not fitted yet; call fit") as info:
      getattr(det, method)(np.zeros((2, 3)))
    assert isinstance(info.value, SklearnNotFittedError)
    assert isinstance(info.value, FlaxaeError)


def test_wrong_width_after_fit(one_class):
  with pytest.raises(ShapeError, match=r"inputs of shape \(3, 5\) do not fit this detector"):
    one_class.predict(np.zeros((3, 5)))
  with pytest.raises(ShapeError, match=r"inputs of shape \(3, 8, 9, 1\)"):
    one_class.predict(np.zeros((3, 8, 9, 1)))


@pytest.mark.parametrize("params,message", [
    (dict(contamination=0.0), "contamination must be in"),
    (dict(contamination=0.7), "contamination must be in"),
    (dict(metric="cosine"), "unknown metric"),
    (dict(preprocessing="zscore"), "unknown preprocessing"),
])
def test_bad_params(params, message):
  with pytest.raises(ConfigError, match=message):
    AutoencoderDetector(**params).fit(np.zeros((8, 2)))


@pytest.mark.parametrize("x,message", [
    (lambda x: np.rint(x * 255).astype(np.int64), r"values in \[0, 255\]; this detector takes"),
    (lambda x: x * 2.0, r"values in \[0, 2\]"),
    (lambda x: np.where(x > 0.5, np.nan, x), "X contains NaN or Inf"),
    (lambda x: x.astype(np.complex64), "real numbers, got complex"),
])
def test_detect_refuses_what_the_model_was_not_trained_on(digits_run, digits, x, message):
  # int64 0-255 images scored ≈1e4 (every one an outlier); NaN gave scikit-learn's
  # 650-character advice; complex numbers printed the whole array.
  from flaxae.apps import anomaly  # pylint: disable=import-outside-toplevel
  from flaxae.errors import DataError  # pylint: disable=import-outside-toplevel
  with pytest.raises(DataError, match=message) as error:
    anomaly.detect(digits_run, x(digits.test_x[:20]), threshold=0.1)
  assert len(str(error.value)) < 200


@pytest.mark.parametrize("threshold", ["0.1", True, float("nan")])
def test_detect_refuses_a_threshold_that_is_not_a_number(digits_run, digits, threshold):
  with pytest.raises(ConfigError, match="the threshold must be a finite number"):
    detect(digits_run, digits.test_x[:2], threshold=threshold)


def test_from_run(digits_run, digits):
  det = AutoencoderDetector.from_run(digits_run, contamination=0.1)
  assert abs(det.labels_.mean() - 0.1) < 0.02
  noise = np.random.default_rng(0).random((50, 8, 8, 1))
  scores = det.anomaly_score(np.concatenate([digits.test_x[:50], noise]))
  assert roc_auc_score(np.r_[np.zeros(50), np.ones(50)], scores) > 0.9


def test_detect_takes_one_example_as_the_run_does(digits_run, digits):
  # The scikit-learn estimator wants a batch; detect (and flaxae detect's
  # one-example files) takes one example in any layout, as Run.encode does.
  from flaxae.apps import anomaly  # pylint: disable=import-outside-toplevel
  batch = anomaly.detect(digits_run, digits.test_x[:3])
  for one in (digits.test_x[1], digits.test_x[1, ..., 0], digits.test_x[1].ravel()):
    found = anomaly.detect(digits_run, one)
    assert found.scores.shape == (1,) and found.threshold == batch.threshold
    np.testing.assert_allclose(found.scores, batch.scores[1:2], rtol=1e-5)


def test_uint8_images_and_run_dir(one_class, digits):
  assert one_class.preprocessing_ == "none" and one_class.feature_shape_ == (8, 8, 1)
  x = np.rint(digits.test_x[:30] * 255).astype(np.uint8)
  np.testing.assert_array_equal(one_class.anomaly_score(x), one_class.anomaly_score(x / 255.0))
  run_dir = one_class.run_.dir
  assert (run_dir / "config.json").exists() and (run_dir / "train_data.npz").exists()
  with pytest.raises(OutputError, match="is not empty"):
    clone(one_class).fit(x)


# The checks that need no fit, in the fast suite; the whole of check_estimator
# (about 3 minutes on 2 cores) runs with FLAXAE_SLOW=1.
@pytest.mark.parametrize("check", [
    estimator_checks.check_no_attributes_set_in_init,
    estimator_checks.check_parameters_default_constructible,
    estimator_checks.check_get_params_invariance,
    estimator_checks.check_set_params,
    estimator_checks.check_estimators_unfitted,
    estimator_checks.check_estimator_repr,
    estimator_checks.check_estimator_cloneable,
], ids=lambda c: c.__name__)
def test_sklearn_checks_without_fit(check):
  check("AutoencoderDetector", AutoencoderDetector(**FAST))


@pytest.mark.skipif(not os.environ.get("FLAXAE_SLOW"), reason="set FLAXAE_SLOW=1")
def test_sklearn_check_estimator():
  failed = [r for r in estimator_checks.check_estimator(
      AutoencoderDetector(**FAST), on_fail=None) if r["status"] == "failed"]
  assert not failed, [(r["check_name"], str(r["exception"])) for r in failed]


def test_cli_detect(digits_run, digits, tmp_path, capsys):
  np.save(tmp_path / "x.npy", digits.test_x[:40])
  assert cli.main(["detect", str(digits_run.dir), str(tmp_path / "x.npy"),
                   "--threshold=0.02"]) == 0
  out = capsys.readouterr()
  rows = out.out.strip().splitlines()
  assert rows[0] == "index,score,outlier" and len(rows) == 41
  expected = detect(digits_run, digits.test_x[:40], threshold=0.02)
  assert [int(r.split(",")[2]) for r in rows[1:]] == expected.outliers.tolist()
  assert f"{expected.outliers.sum()} of 40 examples are outliers" in out.err
  argv = ["detect", str(digits_run.dir), str(tmp_path / "x.npy"), "-o",
          str(tmp_path / "d.csv")]
  assert cli.main(argv) == 0
  assert len((tmp_path / "d.csv").read_text().splitlines()) == 41
  with pytest.raises(OutputError, match="exists; pass --overwrite"):
    cli.main([*argv, "--debug"])
