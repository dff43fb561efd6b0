"""The pictures a trained run draws, by name (``flaxae plot RUN_DIR WHAT -o FILE``).

========================  ==================================================
``latent``                the test set's codes in 2-D (as they are for 2-D
                          codes, else PCA or t-SNE), coloured by label where
                          the data has labels
``grid``                  decoded codes over the latent plane
                          (:func:`~flaxae.apps.generate.latent_grid`)
``interpolate``           the decoded path between two test examples
``traverse``              one code dimension at a time, from a test example
``samples``               images from a VAE's prior
``reconstructions``       test images above their reconstructions
``loss``                  the training curves of ``metrics.jsonl``
========================  ==================================================

Each picture joins the run, its own test set (:func:`flaxae.data.load_dataset`
of the run's config), :mod:`flaxae.apps.generate` and :mod:`flaxae.viz`; the
file is written atomically, in the format its suffix names (``.png``,
``.pdf``, ``.svg``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from flaxae import viz
from flaxae.api import Run
from flaxae.apps import generate
from flaxae.errors import ConfigError, DataError, OutputError

PICTURES = ("latent", "grid", "interpolate", "traverse", "samples", "reconstructions",
            "loss")
# What ``n`` counts for each picture, and its default.
DEFAULT_N = {"latent": 2000, "grid": 12, "interpolate": 10, "traverse": 9, "samples": 32,
             "reconstructions": 10, "loss": 0}
# The ``method`` each picture takes (the first is its default).
FORMATS = (".png", ".pdf", ".svg")
METHODS = {"latent": ("auto", "pca", "tsne", "direct"), "interpolate": ("linear", "slerp")}


def _test_set(run: Run) -> tuple[np.ndarray, np.ndarray | None]:
  from flaxae.train.rundir import own_data  # pylint: disable=import-outside-toplevel
  ds = own_data(run.dir, run.config, "its pictures")
  return ds.test_x, ds.test_y


def _example(x: np.ndarray, index: int) -> np.ndarray:
  if not -len(x) <= index < len(x):
    raise DataError(f"example {index} is outside the test set's {len(x)} examples")
  return x[index]


def draw(run: Run, what: str, path: str | os.PathLike, *, n: int = 0, method: str = "",
         examples: tuple[int, ...] = (0, 1), seed: int = 0) -> dict[str, Any]:
  """Draws picture ``what`` of ``run`` to ``path``.

  Args:
    run: The trained run.
    what: One of :data:`PICTURES`.
    path: The picture file (its suffix picks the format).
    n: How many: test codes (latent), grid side (grid), steps (interpolate,
      traverse), images (samples, reconstructions); 0: :data:`DEFAULT_N`.
    method: ``latent``: auto, pca, tsne or direct; ``interpolate``: linear or
      slerp; empty: the picture's default.
    examples: Test examples: the two ends of ``interpolate``, the start of
      ``traverse`` (the first).
    seed: Seed of ``samples``, of t-SNE and of the choice of ``latent``'s codes.

  Returns:
    What was drawn: the picture, its file, and the settings used.
  """
  if Path(path).suffix.lower() not in FORMATS:
    raise OutputError(f"name the picture FILE{', FILE'.join(FORMATS)}, got {os.fspath(path)!r}")
  if what not in PICTURES:
    raise ConfigError(f"unknown picture {what!r}; known: {', '.join(PICTURES)}")
  methods = METHODS.get(what, ())
  method = method or (methods[0] if methods else "")
  if method and method not in methods:
    known = f"one of {', '.join(methods)}" if methods else "none"
    raise ConfigError(f"picture {what} takes method {known}, got {method!r}")
  for key, value in (("n", n), ("seed", seed), *(("examples", e) for e in examples)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ConfigError(f"{key} takes integers, got {value!r}")
  if n < 0:
    raise ConfigError(f"n must not be negative, got {n}")
  if what in ("grid", "interpolate", "traverse") and n == 1:
    raise ConfigError(f"{what} needs n of at least 2 (0: the default), got {n}")
  if not 0 <= seed < 2**32:
    raise ConfigError(f"seed must be in [0, 2**32), got {seed}")
  n = n or DEFAULT_N[what]
  shape = run.feature_shape
  name = f"{run.config.model.kind} {run.config.model.arch} AE"
  if what == "loss":
    if not run.history:
      raise DataError(f"{run.dir} has no training history (metrics.jsonl) to draw")
    viz.save_loss_curves(run.history, path, title=f"{name}: loss per epoch")
  elif what == "samples":
    viz.save_samples(generate.samples(run, n, seed=seed), path, cols=min(n, 8),
                     title=f"{name}: samples from the prior", image_shape=shape)
  elif what == "grid":
    viz.save_mosaic(generate.latent_grid(run, n=n), path, image_shape=shape,
                    title=f"{name}: decoded latent plane")
  else:
    x, y = _test_set(run)
    if what in ("latent", "reconstructions"):
      n = min(n, len(x))  # (The returned settings say how many were drawn.)
    if what == "latent":
      chosen = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
      codes = run.encode(x[chosen])
      viz.save_latent_scatter(codes, None if y is None else y[chosen], path,
                              method=method, seed=seed)
    elif what == "reconstructions":
      viz.save_reconstructions(x[:n], run.reconstruct(x[:n]), path, image_shape=shape)
    elif what == "interpolate":
      if len(examples) != 2:
        raise ConfigError(f"interpolate needs two examples, got {len(examples)}")
      ends = [_example(x, i) for i in examples]
      path_images = generate.interpolate(run, *ends, n=n, method=method)
      viz.save_mosaic(path_images[None], path, image_shape=shape,
                      title=f"{name}: {method} path from example {examples[0]} to "
                            f"{examples[1]}")
    else:  # traverse
      if not examples:
        raise ConfigError("traverse needs an example to start from (the first of examples)")
      start = _example(x, examples[0])
      images = generate.traverse(run, start, n=n)
      size = int(np.prod(run.model.code_shape))
      which = ("each code dimension" if len(images) == size else
               f"code dimensions 0-{len(images) - 1} of {size}, each")
      viz.save_mosaic(images, path, image_shape=shape,
                      row_labels=[f"z{d}" for d in range(len(images))],
                      title=f"{name}: {which} ±2.5 std from example {examples[0]}")
  return {"picture": what, "file": os.fspath(path), "n": n, "method": method,
          "examples": list(examples), "seed": seed}
