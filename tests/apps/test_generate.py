"""Latent grids, interpolation, traversals and samples."""

from __future__ import annotations

import types

import numpy as np
import pytest

from flaxae import viz
from flaxae.apps import generate as G
from flaxae.errors import ConfigError, DataError, ShapeError


class LinearRun:
  """A stand-in run whose decoder is the identity on 2-D codes: exact expectations."""

  feature_shape = (2,)
  model = types.SimpleNamespace(code_shape=(2,))

  def encode(self, x):
    return np.asarray(x, np.float32).reshape(len(x), 2)

  def decode(self, z):
    return np.asarray(z, np.float32)


def test_grid_of_a_2d_code_is_mean_plus_minus_span_std():
  codes = np.random.default_rng(0).normal([1.0, -2.0], [0.5, 2.0], (500, 2))
  stats = G.code_stats(LinearRun(), codes=codes)
  grid = G.latent_grid(LinearRun(), n=5, span=2.0, stats=stats)
  assert grid.shape == (5, 5, 2)
  np.testing.assert_allclose(grid[2, 2], stats.mean, atol=1e-5)
  np.testing.assert_allclose(grid[0, -1] - grid[2, 2], 2.0 * stats.std * [1, 1], rtol=1e-5)
  np.testing.assert_allclose(grid[-1, 0] - grid[2, 2], -2.0 * stats.std, rtol=1e-5)


def test_interpolation_ends_at_the_codes_and_slerp_keeps_the_norm():
  run = LinearRun()
  a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
  lin = G.interpolate(run, a, b, n=5)
  np.testing.assert_allclose(lin[[0, -1]], [a, b], atol=1e-6)
  np.testing.assert_allclose(lin[2], (a + b) / 2, atol=1e-6)
  sph = G.interpolate(run, a, b, n=5, method="slerp")
  np.testing.assert_allclose(np.linalg.norm(sph, axis=1), 3.0, rtol=1e-5)
  np.testing.assert_allclose(sph[[0, -1]], [a, b], atol=1e-5)
  with pytest.raises(ConfigError, match="unknown interpolation"):
    G.interpolate(run, a, b, method="cubic")


def test_slerp_of_parallel_codes_is_linear():
  path = G.slerp(np.array([1.0, 1.0]), np.array([2.0, 2.0]), np.linspace(0, 1, 3))
  np.testing.assert_allclose(path, [[1, 1], [1.5, 1.5], [2, 2]])


def test_traversal_moves_one_dimension_at_a_time():
  run = LinearRun()
  stats = G.code_stats(run, codes=np.random.default_rng(1).normal(0, [1.0, 3.0], (400, 2)))
  out = G.traverse(run, np.array([0.5, 0.5]), n=3, span=1.0, stats=stats)
  assert out.shape == (2, 3, 2)
  np.testing.assert_allclose(out[0, :, 1], 0.5)
  np.testing.assert_allclose(out[0, :, 0], 0.5 + np.array([-1, 0, 1]) * stats.std[0], rtol=1e-5)
  np.testing.assert_allclose(out[1, :, 0], 0.5)
  with pytest.raises(ShapeError, match="outside the code"):
    G.traverse(run, np.array([0.5, 0.5]), dims=[2], stats=stats)


def test_on_a_trained_run(digits_run, digits, tmp_path):
  stats = G.code_stats(digits_run, digits.train_x)
  assert stats.axes.shape == (8, 8) and np.all(np.diff(stats.axis_std) <= 1e-9)
  grid = G.latent_grid(digits_run, n=6, stats=stats)
  assert grid.shape == (6, 6, 8, 8, 1) and 0.0 <= grid.min() and grid.max() <= 1.0
  path = G.interpolate(digits_run, digits.test_x[0], digits.test_x[1], n=7, method="slerp")
  np.testing.assert_allclose(path[0], digits_run.reconstruct(digits.test_x[:1])[0], atol=1e-5)
  trav = G.traverse(digits_run, digits.test_x[0], dims=[0, 3], n=5, stats=stats)
  assert trav.shape == (2, 5, 8, 8, 1)
  viz.save_mosaic(grid, tmp_path / "grid.png")
  viz.save_mosaic(trav, tmp_path / "trav.png", row_labels=["z0", "z3"])
  assert (tmp_path / "grid.png").stat().st_size > 500


def test_samples_need_a_vae(digits_run):
  with pytest.raises(ConfigError, match="vae"):
    G.samples(digits_run, 4)
  fake = types.SimpleNamespace(sample=lambda n, seed=0: np.full((n, 3), seed / 10))
  np.testing.assert_array_equal(G.samples(fake, 2, seed=5), np.full((2, 3), 0.5))


def test_interpolation_takes_each_end_in_its_own_layout_and_dtype(digits_run, digits):
  # Both ends were stacked: a flat end beside an image was a ValueError, a
  # uint8 end beside a float one "float inputs must be in [0, 1], got [0, 239]".
  x0, x1 = digits.test_x[0], digits.test_x[1]
  want = G.interpolate(digits_run, x0, x1, n=3)
  as_bytes = np.rint(x0 * 255).astype(np.uint8)
  np.testing.assert_allclose(G.interpolate(digits_run, x0, x1.reshape(64), n=3), want)
  np.testing.assert_allclose(G.interpolate(digits_run, as_bytes, x1, n=3)[-1], want[-1],
                             rtol=1e-6)


@pytest.mark.parametrize("call,message", [
    (lambda run, x: G.interpolate(run, x, x, n=-1), "n ≥ 1 images, got -1"),
    (lambda run, x: G.traverse(run, x, n=0), "n ≥ 1 steps, got 0"),
])
def test_counts_below_one_are_refused(digits_run, digits, call, message):
  with pytest.raises(ConfigError, match=message):
    call(digits_run, digits.test_x[0])


@pytest.mark.parametrize("dims,error,message", [
    ([], ConfigError, "at least one code dimension"),  # Was a reshape ValueError.
    ([0.5], ShapeError, "outside the code"),  # Was an IndexError.
    ([True], ShapeError, "outside the code"),
])
def test_traversal_dimensions_are_checked(digits_run, digits, dims, error, message):
  with pytest.raises(error, match=message):
    G.traverse(digits_run, digits.test_x[0], dims=dims, n=3)


def test_code_stats_of_nan_codes_is_a_data_error():
  with pytest.raises(DataError, match="NaN or Inf"):  # Was NumPy's LinAlgError.
    G.code_stats(LinearRun(), codes=np.full((3, 2), np.nan))


def test_code_stats_of_no_codes_is_a_data_error():
  with pytest.raises(DataError, match="need a batch of codes"):
    G.code_stats(LinearRun(), codes=np.zeros((0, 2)))


def test_integer_images_other_than_uint8_are_named_as_such(digits_run, digits):
  # int64 0-255 images were told "float inputs must be in [0, 1]".
  x = np.round(digits.test_x[:2] * 255).astype(np.int64)
  with pytest.raises(DataError, match=r"int64 \(not uint8\) inputs must be in \[0, 1\]"):
    digits_run.encode(x)
  np.testing.assert_array_equal(digits_run.encode(x.astype(np.uint8)),
                                digits_run.encode(x.astype(np.uint8) / np.float32(255)))
