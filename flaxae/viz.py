"""Pictures, saved as PNG with a headless backend."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from flaxae import io  # pylint: disable=wrong-import-position


def _as_images(x: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray:
  """``(N, H, W)`` or ``(N, H, W, 3)`` for imshow, from images or vectors."""
  x = np.asarray(x, np.float32)
  if image_shape is not None and len(image_shape) == 3:
    x = x.reshape(len(x), *image_shape)
  elif x.ndim == 2:
    side = int(round(np.sqrt(x.shape[1])))
    if side * side != x.shape[1]:
      return x[:, None, :]  # A vector as a one-pixel-high strip.
    x = x.reshape(len(x), side, side)
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  return np.clip(x, 0.0, 1.0)


def save_grid(rows: list[np.ndarray], path: str | os.PathLike, *,
              titles: list[str] | None = None,
              image_shape: tuple[int, ...] | None = None) -> None:
  """Saves rows of images (each ``(N, ...)``) as one PNG grid, atomically."""
  rows = [_as_images(r, image_shape) for r in rows]
  cols = max(len(r) for r in rows)
  fig, axes = plt.subplots(len(rows), cols, squeeze=False,
                           figsize=(cols * 1.0, len(rows) * 1.1))
  for i, row in enumerate(rows):
    for j in range(cols):
      ax = axes[i][j]
      ax.axis("off")
      if j < len(row):
        ax.imshow(row[j], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    if titles:
      axes[i][0].set_title(titles[i], fontsize=8, loc="left")
  fig.tight_layout()
  with io.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=80)
  plt.close(fig)


def save_reconstructions(x: np.ndarray, recon: np.ndarray, path: str | os.PathLike,
                         image_shape: tuple[int, ...] | None = None) -> None:
  """Test images above their reconstructions."""
  save_grid([x, recon], path, titles=["input", "reconstruction"],
            image_shape=image_shape)
