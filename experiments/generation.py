"""Pictures of the latent space: grids, interpolations, traversals, samples, denoising.

Trains on Fashion-MNIST (unsupervised): a plain autoencoder with a 2-D code
(scatter and grid of the code itself), a plain one with a 32-D code (grid on
the plane of its two principal directions, interpolations, traversals), a
VAE with a 16-D code (samples from the prior, traversals) and a denoising
autoencoder (noisy / denoised / clean), and plots their loss curves.

  python -m experiments.generation           # about 15 minutes on 2 cores
  python -m experiments.generation --quick   # the digits, seconds
"""

from __future__ import annotations

import time

import numpy as np

from experiments import common
from flaxae import viz
from flaxae.apps import generate
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.data import load_dataset

MODELS = {
    "plain-2d": ModelConfig(widths=(512, 128, 2)),
    "plain-32d": ModelConfig(widths=(512, 256, 32)),
    "vae-16d": ModelConfig(kind="vae", widths=(512, 256, 16)),
    "denoising-32d": ModelConfig(kind="denoising", widths=(512, 256, 32),
                                 noise="gaussian:0.5"),
}
QUICK_MODELS = {
    "plain-2d": ModelConfig(widths=(32, 2)),
    "plain-32d": ModelConfig(widths=(32, 8)),
    "vae-16d": ModelConfig(kind="vae", widths=(32, 4)),
    "denoising-32d": ModelConfig(kind="denoising", widths=(32, 8), noise="gaussian:0.5"),
}


def main(argv: list[str] | None = None) -> dict:
  p = common.parser(__doc__.splitlines()[0])
  p.add_argument("--epochs", type=common.positive_int, default=15)
  args = p.parse_args(argv)
  out = common.out_dir("generation", args)
  start = time.perf_counter()
  if args.quick:
    data, models, epochs, batch = DataConfig(name="digits"), QUICK_MODELS, 2, 64
  else:
    data, models, epochs, batch = (DataConfig(name="fashion_mnist", dir=str(common.FASHION)),
                                   MODELS, args.epochs, 256)
  ds = load_dataset(data, args.seed)
  runs = {}
  for name, model in models.items():
    cfg = Config(data=data, model=model,
                 train=TrainConfig(epochs=epochs, batch_size=batch, seed=args.seed),
                 checkpoint=CheckpointConfig(every_steps=10**9, keep=1),
                 run_dir=str(common.runs_dir(args) / f"generation-{data.name}-{name}-e{epochs}"
                             f"-s{args.seed}"))
    runs[name] = common.get_run(cfg)
  figs, results = [], {"data": data.name, "epochs": epochs, "models": {}}
  x = ds.test_x

  # A 2-D code: the code itself.
  run = runs["plain-2d"]
  figs.append(out / "latent_2d_scatter.png")
  viz.save_latent_scatter(run.encode(x[:5000]), ds.test_y[:5000], figs[-1],
                          title=f"{data.name}: 2-D code of the test set")
  figs.append(out / "latent_2d_grid.png")
  viz.save_mosaic(generate.latent_grid(run, n=15, span=2.0), figs[-1],
                  title="decoded grid of the 2-D code (mean ± 2 std)")

  # A wider code: its principal plane, interpolations, traversals.
  run = runs["plain-32d"]
  stats = generate.code_stats(run, ds.train_x)
  figs.append(out / "latent_pca_plane_grid.png")
  viz.save_mosaic(generate.latent_grid(run, n=12, span=2.0, stats=stats), figs[-1],
                  title="decoded plane of the 2 principal directions of the code")
  pairs = [(0, 1), (2, 3), (4, 5), (6, 7)]
  rows, labels = [], []
  for i, j in pairs:
    for method in ("linear", "slerp"):
      rows.append(generate.interpolate(run, x[i], x[j], n=10, method=method))
      labels.append(f"{method} {i}→{j}")
  figs.append(out / "interpolation.png")
  viz.save_mosaic(np.stack(rows), figs[-1], row_labels=labels,
                  title="interpolation between test images' codes")
  figs.append(out / "traversal_plain.png")
  dims = list(range(min(8, len(stats.mean))))
  viz.save_mosaic(generate.traverse(run, x[0], dims=dims, n=9, stats=stats), figs[-1],
                  row_labels=[f"z{d}" for d in dims], title="traversal, ±2.5 std per dimension")

  # The VAE: samples from the prior, traversals.
  run = runs["vae-16d"]
  figs.append(out / "vae_samples.png")
  viz.save_samples(generate.samples(run, 64, seed=args.seed), figs[-1], cols=16,
                   title="VAE: samples from the prior N(0, I)")
  vae_stats = generate.code_stats(run, ds.train_x)
  dims = list(range(min(8, len(vae_stats.mean))))
  figs.append(out / "traversal_vae.png")
  viz.save_mosaic(generate.traverse(run, x[0], dims=dims, n=9, stats=vae_stats), figs[-1],
                  row_labels=[f"z{d}" for d in dims], title="VAE traversal, ±2.5 std")
  results["models"]["vae-16d"] = runs["vae-16d"].evaluate(x)

  # Denoising.
  run = runs["denoising-32d"]
  rng = np.random.default_rng(args.seed)
  noisy = np.clip(x[:12] + rng.normal(0.0, 0.5, x[:12].shape), 0.0, 1.0).astype(np.float32)
  figs.append(out / "denoising_triplets.png")
  viz.save_triplets(noisy, run.reconstruct(noisy), x[:12], figs[-1])
  results["models"]["denoising-32d"] = run.evaluate(x, noise="gaussian:0.5")
  results["models"]["plain-32d (same noise)"] = runs["plain-32d"].evaluate(
      x, noise="gaussian:0.5")

  # Loss curves.
  for name, run in runs.items():
    figs.append(out / f"loss_{name}.png")
    viz.save_loss_curves(run.history, figs[-1], title=f"{data.name}: {name}")
    results["models"].setdefault(name, run.evaluate(x))
  results["models"] = {k: {m: float(v) for m, v in d.items() if np.ndim(v) == 0}
                       for k, d in results["models"].items()}
  results["seconds"] = time.perf_counter() - start
  results["command"] = common.command("generation", argv)
  common.write_json(out / "generation.json", results)
  common.publish(figs, args)
  keys = ["loss", "bce", "mse", "psnr", "noisy_psnr", "denoised_psnr"]
  rows = [{"model": k, **v} for k, v in results["models"].items()]
  print(common.table(rows, ["model", *keys]))
  return results


if __name__ == "__main__":
  common.cli(main)
