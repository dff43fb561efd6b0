"""Pictures: every kind is a PNG, written atomically, from plain arrays."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from flaxae import viz
from flaxae.errors import ConfigError, DataError, OutputError, ShapeError

RNG = np.random.default_rng(0)


def _png(path):
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  return matplotlib.image.imread(path)


def test_grid_and_reconstructions(tmp_path):
  x = RNG.random((6, 8, 8, 1))
  viz.save_reconstructions(x, x[::-1], tmp_path / "r.png")
  viz.save_grid([x.reshape(6, 64)], tmp_path / "g.png", titles=["flat"])
  assert _png(tmp_path / "r.png").shape[0] > 50 and _png(tmp_path / "g.png").size


def test_triplets(tmp_path):
  clean = RNG.random((5, 28, 28))
  viz.save_triplets(np.clip(clean + 0.3, 0, 1), clean, clean, tmp_path / "t.png")
  assert _png(tmp_path / "t.png").shape[0] > 100


def test_mosaic_layout():
  grid = np.zeros((2, 3, 4, 5, 1))
  grid[1, 2] = 1.0
  tiled = viz.mosaic(grid, pad=1)
  assert tiled.shape == (2 * 5 - 1, 3 * 6 - 1)
  assert tiled[5:, 12:].min() == 1.0 and tiled[:4, :5].max() == 0.0


def test_samples_and_mosaic(tmp_path):
  viz.save_samples(RNG.random((10, 64)), tmp_path / "s.png", cols=4, title="samples")
  viz.save_mosaic(RNG.random((3, 7, 8, 8, 1)), tmp_path / "m.png",
                  row_labels=["z0", "z1", "z2"], title="traversal")
  assert _png(tmp_path / "s.png").size and _png(tmp_path / "m.png").size


@pytest.mark.parametrize("dim,method,used", [(2, "auto", "direct"), (5, "auto", "pca"),
                                             (5, "tsne", "tsne")])
def test_latent_scatter(tmp_path, dim, method, used):
  codes = RNG.normal(size=(60, dim))
  points, got = viz.project_2d(codes, method)
  assert points.shape == (60, 2) and got == used
  if used == "direct":
    np.testing.assert_array_equal(points, codes)
  viz.save_latent_scatter(codes, np.arange(60) % 3, tmp_path / "l.png", method=method)
  assert _png(tmp_path / "l.png").size


def test_direct_needs_2d():
  with pytest.raises(ShapeError, match="needs 2-D codes"):
    viz.project_2d(np.zeros((4, 3)), "direct")


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_a_collapsed_latent_space_is_one_point(tmp_path, method):
  # Every code the same (a VQ run that uses one code): scikit-learn's t-SNE
  # crashed the process on it, its PCA gave NaN.
  points, _ = viz.project_2d(np.ones((50, 4)), method)
  np.testing.assert_array_equal(points, np.zeros((50, 2)))
  viz.save_latent_scatter(np.ones((50, 4)), None, tmp_path / "l.png", method=method)


def test_images_of_two_or_many_channels_show_each_channel(tmp_path):
  # imshow takes grey, RGB or RGBA only: 2 channels crashed a run's last step.
  x = RNG.random((3, 4, 5, 2))
  images = viz._as_images(x, None)  # pylint: disable=protected-access
  assert images.shape == (3, 4, 10)
  np.testing.assert_allclose(images[:, :, 5:], x[..., 1], rtol=1e-6)
  viz.save_reconstructions(x, x, tmp_path / "r.png", image_shape=(4, 5, 2))
  viz.save_mosaic(RNG.random((2, 3, 4, 5, 4)), tmp_path / "m.png")
  assert _png(tmp_path / "r.png").size and _png(tmp_path / "m.png").size


def test_what_cannot_be_drawn_is_named(tmp_path):
  with pytest.raises(ShapeError, match="at least 2 values"):
    viz.project_2d(np.zeros((10, 1)))
  with pytest.raises(DataError, match="tsne needs at least 3 codes"):
    viz.project_2d(np.zeros((2, 4)), "tsne")
  with pytest.raises(ConfigError, match="unknown projection"):
    viz.project_2d(np.zeros((4, 4)), "umap")
  with pytest.raises(DataError, match="no images to draw"):
    viz.save_samples(np.zeros((0, 8, 8)), tmp_path / "s.png")
  assert not list(tmp_path.iterdir())


def test_loss_curves_from_metrics_jsonl(tmp_path):
  records = [{"step": 10 * e, "epoch": e, "train/loss": 1 / e, "test/loss": 1.1 / e}
             for e in range(1, 6)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert viz.read_history(tmp_path) == records
  viz.save_loss_curves(tmp_path, tmp_path / "loss.png", log=True)
  assert _png(tmp_path / "loss.png").size


def test_rate_distortion_and_roc(tmp_path):
  viz.save_rate_distortion({"ae": ([0.1, 0.3, 0.2], [20, 24, 22]), "jpeg": ([0.5, 1.0], [18, 25])},
                           tmp_path / "rd.png", xlim=(0, 1.2))
  truth = np.r_[np.zeros(50), np.ones(50)]
  viz.save_roc({"good": (truth, truth + RNG.random(100)), "random": (truth, RNG.random(100))},
               tmp_path / "roc.png")
  assert _png(tmp_path / "rd.png").size and _png(tmp_path / "roc.png").size


def test_writes_are_atomic_and_checked(tmp_path):
  viz.save_samples(RNG.random((4, 16)), tmp_path / "a.png")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # No temporary left.
  with pytest.raises(OutputError, match="does not exist"):
    viz.save_samples(RNG.random((4, 16)), tmp_path / "missing" / "a.png")


def test_drawing_leaves_the_processs_matplotlib_backend_alone(tmp_path):
  # A notebook's inline backend or an application's GUI one stays the user's.
  code = ("import matplotlib; matplotlib.use('svg'); import numpy as np; "
          "import flaxae.api; from flaxae import viz; "
          f"viz.save_grid([np.zeros((2, 4, 4))], {str(tmp_path / 'g.png')!r}); "
          "print(matplotlib.get_backend())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, check=True)
  assert out.stdout.strip() == "svg"
  assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("call,error,message", [
    # Were IndexError, ZeroDivisionError, a reshape ValueError, an empty plot.
    (lambda p: viz.save_latent_scatter(np.random.rand(5, 2), np.arange(3), p), ShapeError,
     "one label per code"),
    (lambda p: viz.save_samples(np.zeros((3, 8, 8, 1)), p, cols=0), ConfigError,
     "cols must be a positive integer"),
    (lambda p: viz.save_latent_scatter(np.zeros((0, 4)), None, p), ShapeError, "N ≥ 1"),
    (lambda p: viz.save_latent_scatter(np.full((5, 2), np.nan), None, p), DataError,
     "NaN or Inf"),
])
def test_bad_pictures_are_named_and_write_nothing(tmp_path, call, error, message):
  with pytest.raises(error, match=message):
    call(tmp_path / "p.png")
  assert not list(tmp_path.iterdir())
