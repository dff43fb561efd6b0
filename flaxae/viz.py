"""Pictures, saved as PNG (or PDF, SVG) files.

Figures are made without pyplot (``matplotlib.figure.Figure`` draws through
the file format's own canvas), so importing flaxae leaves the process's
matplotlib backend alone: a notebook's inline figures, an application's GUI.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from flaxae import io
from flaxae.errors import ConfigError, DataError, ShapeError


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
              **kwargs):
  """``(figure, axes)`` like ``pyplot.subplots``, outside pyplot's registry."""
  fig = Figure(figsize=figsize)
  return fig, fig.subplots(nrows, ncols, **kwargs)


def _as_images(x: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray:
  """``(N, H, W)`` or ``(N, H, W, 3)`` for imshow, from images or vectors
  (images of 2 or more than 3 channels: each channel in grey, side by side)."""
  x = np.asarray(x, np.float32)
  if x.ndim < 2 or not len(x):
    raise DataError(f"no images to draw (an array of shape {x.shape}; images are (N, ...))")
  if image_shape is not None and len(image_shape) == 3:
    x = x.reshape(len(x), *image_shape)
  elif x.ndim == 2:
    side = int(round(np.sqrt(x.shape[1])))
    if side * side != x.shape[1]:
      return x[:, None, :]  # A vector as a one-pixel-high strip.
    x = x.reshape(len(x), side, side)
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  elif x.ndim == 4 and x.shape[-1] != 3:  # Not grey, not RGB: its channels side by side.
    n, h, w, c = x.shape
    x = x.transpose(0, 1, 3, 2).reshape(n, h, c * w)
  return np.clip(x, 0.0, 1.0)


def save_grid(rows: list[np.ndarray], path: str | os.PathLike, *,
              titles: list[str] | None = None,
              image_shape: tuple[int, ...] | None = None) -> None:
  """Saves rows of images (each ``(N, ...)``) as one PNG grid, atomically."""
  rows = [_as_images(r, image_shape) for r in rows]
  cols = max(len(r) for r in rows)
  fig, axes = _subplots(len(rows), cols, squeeze=False,
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


def save_reconstructions(x: np.ndarray, recon: np.ndarray, path: str | os.PathLike,
                         image_shape: tuple[int, ...] | None = None) -> None:
  """Test images above their reconstructions."""
  save_grid([x, recon], path, titles=["input", "reconstruction"],
            image_shape=image_shape)


def _save(fig, path: str | os.PathLike, dpi: int = 100) -> None:
  """Saves and closes ``fig``, atomically."""
  with io.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=dpi)


def save_triplets(noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray,
                  path: str | os.PathLike,
                  image_shape: tuple[int, ...] | None = None) -> None:
  """Noisy inputs, their reconstructions and the clean images, one row each."""
  save_grid([noisy, denoised, clean], path, titles=["noisy", "denoised", "clean"],
            image_shape=image_shape)


def mosaic(grid: np.ndarray, pad: int = 1) -> np.ndarray:
  """Tiles images ``(R, C, H, W[, 1 or 3])`` into one ``(R·(H+pad)-pad, ...)`` image."""
  grid = np.asarray(grid, np.float32)
  if grid.ndim == 5 and grid.shape[-1] == 1:
    grid = grid[..., 0]
  rows, cols, h, w = grid.shape[:4]
  out = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad, *grid.shape[4:]),
                np.float32)
  for i in range(rows):
    for j in range(cols):
      out[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = grid[i, j]
  return np.clip(out, 0.0, 1.0)


def save_mosaic(grid: np.ndarray, path: str | os.PathLike, *, title: str | None = None,
                row_labels: list[str] | None = None,
                image_shape: tuple[int, ...] | None = None) -> None:
  """Saves images ``(R, C, ...)`` (latent grids, traversals, interpolations) as
  one tiled picture."""
  grid = np.asarray(grid, np.float32)
  rows, cols = grid.shape[:2]
  images = _as_images(grid.reshape(rows * cols, *grid.shape[2:]), image_shape)
  tiled = mosaic(images.reshape(rows, cols, *images.shape[1:]))
  height, width = tiled.shape[:2]
  scale = 6.0 / max(height, width)
  fig, ax = _subplots(figsize=(max(width * scale, 2.0) + (1.0 if row_labels else 0.0),
                                  max(height * scale, 1.0) + (0.4 if title else 0.0)))
  ax.imshow(tiled, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
  ax.set_xticks([])
  if row_labels:
    h = images.shape[1] + 1
    ax.set_yticks([i * h + (h - 1) / 2 for i in range(rows)], row_labels, fontsize=8)
  else:
    ax.set_yticks([])
  for spine in ax.spines.values():
    spine.set_visible(False)
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)


def save_samples(images: np.ndarray, path: str | os.PathLike, cols: int = 8, *,
                 title: str | None = None,
                 image_shape: tuple[int, ...] | None = None) -> None:
  """Images ``(N, ...)`` in rows of ``cols`` (the last row padded with white)."""
  if isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
    raise ConfigError(f"cols must be a positive integer, got {cols!r}")
  images = _as_images(images, image_shape)
  n = len(images)
  rows = -(-n // cols)
  blank = np.ones((rows * cols - n, *images.shape[1:]), np.float32)
  grid = np.concatenate([images, blank]).reshape(rows, cols, *images.shape[1:])
  save_mosaic(grid, path, title=title)


def project_2d(codes: np.ndarray, method: str = "auto",
               seed: int = 0) -> tuple[np.ndarray, str]:
  """Codes ``(N, ...)`` as points ``(N, 2)``: as they are (2-D codes), by PCA or by
  t-SNE; ``auto`` is direct for 2-D codes and PCA otherwise. Returns the
  points and the method used."""
  z = np.asarray(codes, np.float64)
  if method not in ("auto", "direct", "pca", "tsne"):
    raise ConfigError(f"unknown projection {method!r}; known: auto, direct, pca, tsne")
  if z.ndim < 2 or not len(z) or np.prod(z.shape[1:]) < 2:
    raise ShapeError(f"codes of shape {np.shape(codes)}: a 2-D picture needs codes "
                     "(N, ...), N ≥ 1, of at least 2 values each")
  z = z.reshape(len(z), -1)
  if not np.all(np.isfinite(z)):
    raise DataError("codes contain NaN or Inf")
  if method == "auto":
    method = "direct" if z.shape[1] == 2 else "pca"
  if method == "direct":
    if z.shape[1] != 2:
      raise ShapeError(f"method 'direct' needs 2-D codes, got {z.shape[1]}-D")
    return z, method
  least = 3 if method == "tsne" else 2
  if len(z) < least:
    raise DataError(f"{method} needs at least {least} codes, got {len(z)}")
  if np.ptp(z, axis=0).max() == 0.0:
    # Every code the same (a collapsed latent space): one point. (scikit-learn's
    # PCA returns NaN for it and its t-SNE crashes the process.)
    return np.zeros((len(z), 2)), method
  # pylint: disable=import-outside-toplevel
  from threadpoolctl import threadpool_limits  # One thread: OpenMP spins against JAX's.
  if method == "pca":
    from sklearn.decomposition import PCA
    with threadpool_limits(1):
      return PCA(n_components=2, random_state=seed).fit_transform(z), method
  from sklearn.manifold import TSNE
  perplexity = float(min(30, max(2, (len(z) - 1) // 3)))
  with threadpool_limits(1):
    return TSNE(n_components=2, random_state=seed, init="pca",
                perplexity=perplexity).fit_transform(z), method


def save_latent_scatter(codes: np.ndarray, labels: np.ndarray | None,
                        path: str | os.PathLike, *, method: str = "auto",
                        title: str | None = None, seed: int = 0) -> None:
  """2-D scatter of codes coloured by class (see :func:`project_2d`)."""
  if labels is not None and np.shape(labels)[:1] != np.shape(codes)[:1]:
    raise ShapeError(f"labels of shape {np.shape(labels)} for codes of shape "
                     f"{np.shape(codes)}: one label per code")
  points, used = project_2d(codes, method, seed)
  fig, ax = _subplots(figsize=(6, 5))
  if labels is None:
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6)
  else:
    labels = np.asarray(labels)
    for k in np.unique(labels):
      sel = labels == k
      ax.scatter(points[sel, 0], points[sel, 1], s=3, alpha=0.6, label=str(k))
    ax.legend(markerscale=4, fontsize=7, loc="best", ncols=2)
  names = {"direct": "z", "pca": "PC", "tsne": "t-SNE "}
  ax.set_xlabel(f"{names[used]}1")
  ax.set_ylabel(f"{names[used]}2")
  ax.set_title(title or f"latent space ({used})", fontsize=10)
  fig.tight_layout()
  _save(fig, path)


def read_history(run_dir: str | os.PathLike) -> list[dict]:
  """The per-epoch records of ``RUN_DIR/metrics.jsonl`` (empty if none)."""
  import json  # pylint: disable=import-outside-toplevel
  from pathlib import Path  # pylint: disable=import-outside-toplevel
  path = Path(run_dir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finish(fig, ax, path: str | os.PathLike, title: str | None,
            legend_loc: str = "best") -> None:
  """Legend, optional title, layout, then the atomic save: every line plot's ending."""
  ax.legend(fontsize=8, loc=legend_loc)
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)


def save_loss_curves(history: list[dict] | str | os.PathLike, path: str | os.PathLike,
                     keys: tuple[str, ...] = ("train/loss", "test/loss"), *,
                     title: str | None = None, log: bool = False) -> None:
  """Per-epoch curves of ``keys`` from a history (or a run directory's metrics.jsonl)."""
  if not isinstance(history, list):
    history = read_history(history)
  fig, ax = _subplots(figsize=(6, 4))
  for key in keys:
    points = [(r.get("epoch", i + 1), r[key]) for i, r in enumerate(history) if key in r]
    if points:
      epochs, values = zip(*points)
      ax.plot(epochs, values, marker="o" if len(points) < 30 else None, ms=3, label=key)
  ax.set_xlabel("epoch")
  ax.set_ylabel("loss")
  if log:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  _finish(fig, ax, path, title)


def save_rate_distortion(curves: dict[str, tuple[np.ndarray, np.ndarray]],
                         path: str | os.PathLike, *, ylabel: str = "PSNR (dB)",
                         title: str | None = None,
                         xlim: tuple[float, float] | None = None) -> None:
  """Quality against bits per pixel, one line per codec: ``{name: (bpp, quality)}``."""
  fig, ax = _subplots(figsize=(6, 4.5))
  for name, (bpp, quality) in curves.items():
    order = np.argsort(bpp)
    ax.plot(np.asarray(bpp)[order], np.asarray(quality)[order], marker="o", ms=3,
            label=name)
  ax.set_xlabel("bits per pixel")
  ax.set_ylabel(ylabel)
  if xlim:
    ax.set_xlim(*xlim)
  ax.grid(alpha=0.3)
  _finish(fig, ax, path, title)


def save_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
             *, title: str | None = None) -> None:
  """ROC curves ``{name: (is_anomaly, score)}`` (higher score: more anomalous),
  with their AUC in the legend."""
  from sklearn.metrics import roc_auc_score, roc_curve  # pylint: disable=import-outside-toplevel
  fig, ax = _subplots(figsize=(5, 5))
  for name, (truth, score) in curves.items():
    fpr, tpr, _ = roc_curve(truth, score)
    ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(truth, score):.3f})")
  ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
  ax.set_xlabel("false positive rate")
  ax.set_ylabel("true positive rate")
  ax.set_aspect("equal")
  _finish(fig, ax, path, title, legend_loc="lower right")
