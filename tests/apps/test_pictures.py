"""Pictures of a run by name: each draws what it says, from the run's own test set."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from flaxae import cli
from flaxae.apps import pictures
from flaxae.errors import ConfigError, DataError, OutputError


def _capture(monkeypatch, name):
  drawn = {}

  def fake(*args, **kwargs):
    drawn.update(args=args, kwargs=kwargs)

  monkeypatch.setattr(pictures.viz, name, fake)
  return drawn


def test_interpolation_goes_from_one_example_to_the_other(digits_run, digits, monkeypatch,
                                                          tmp_path):
  drawn = _capture(monkeypatch, "save_mosaic")
  pictures.draw(digits_run, "interpolate", tmp_path / "i.png", n=5, examples=(3, 7))
  grid = drawn["args"][0]
  assert grid.shape == (1, 5, 8, 8, 1)
  ends = digits_run.reconstruct(digits.test_x[[3, 7]])
  np.testing.assert_allclose(grid[0, [0, -1]], ends, atol=1e-5)


def test_latent_draws_the_codes_of_test_examples_with_their_labels(digits_run, digits,
                                                                   monkeypatch, tmp_path):
  drawn = _capture(monkeypatch, "save_latent_scatter")
  pictures.draw(digits_run, "latent", tmp_path / "l.png", n=50, seed=3)
  codes, labels = drawn["args"][:2]
  assert codes.shape == (50, 8) and drawn["kwargs"]["method"] == "auto"
  # Each code is the code of the test example whose label it carries.
  for code, label in zip(codes, labels):
    match = np.flatnonzero(np.all(np.isclose(digits_run.encode(digits.test_x), code,
                                             atol=1e-5), axis=1))
    assert len(match) and label in digits.test_y[match]


def test_traverse_moves_one_dimension_per_row(digits_run, monkeypatch, tmp_path):
  drawn = _capture(monkeypatch, "save_mosaic")
  pictures.draw(digits_run, "traverse", tmp_path / "t.png", n=3)
  grid = drawn["args"][0]
  assert grid.shape == (8, 3, 8, 8, 1)  # 8 code dimensions, 3 steps each.
  assert drawn["kwargs"]["row_labels"] == [f"z{d}" for d in range(8)]


def test_every_picture_from_the_command_line(digits_run, tmp_path, capsys):
  for what in pictures.PICTURES:
    out = tmp_path / f"{what}.png"
    status = cli.main(["plot", str(digits_run.dir), what, "-o", str(out)])
    if what == "samples":  # A plain autoencoder has no prior.
      assert status == 2 and "needs a model.kind=vae run" in capsys.readouterr().err
      assert not out.exists()
      continue
    assert status == 0, capsys.readouterr().err
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.std() > 0.01, what  # A picture, not a blank.


def test_counts_beyond_the_test_set_draw_it_all_and_say_so(digits_run, digits, tmp_path):
  # n=100000 drew all 359 images and reported n=100000.
  drawn = pictures.draw(digits_run, "reconstructions", tmp_path / "r.png", n=10**5)
  assert drawn["n"] == len(digits.test_x)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"what": "cloud"}, ConfigError, "unknown picture 'cloud'"),
    ({"what": "latent", "method": "slerp"}, ConfigError, "takes method one of auto"),
    ({"what": "grid", "method": "pca"}, ConfigError, "takes method none"),
    ({"what": "grid", "n": 1}, ConfigError, "at least 2"),
    ({"what": "traverse", "examples": (10**6,)}, DataError, "outside the test set"),
    ({"what": "interpolate", "examples": (1,)}, ConfigError, "needs two examples"),
    ({"what": "latent", "name": "p.npy"}, OutputError, "name the picture FILE.png"),
    ({"what": "latent", "seed": -1}, ConfigError, "seed must be in"),
    ({"what": "traverse", "examples": ()}, ConfigError, "needs an example to start from"),
    ({"what": "reconstructions", "n": -3}, ConfigError, "n must not be negative"),
    # Were IndexError / TypeError from NumPy.
    ({"what": "interpolate", "examples": (0.5, 1)}, ConfigError, "examples takes integers"),
    ({"what": "latent", "seed": 1.5}, ConfigError, "seed takes integers"),
    ({"what": "latent", "n": 2.5}, ConfigError, "n takes integers"),
])
def test_bad_requests_are_named_and_write_nothing(digits_run, tmp_path, kwargs, error,
                                                  message):
  what, name = kwargs.pop("what"), kwargs.pop("name", "p.png")
  with pytest.raises(error, match=message):
    pictures.draw(digits_run, what, tmp_path / name, **kwargs)
  assert not list(tmp_path.iterdir())
