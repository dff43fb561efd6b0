"""The autoencoder family on real data: each variant checked by what it does.

Trains every variant of issue 4's acceptance list, each next to the plain
model it is compared with, and checks the numbers:

* sparse (KL-ρ, ρ = 0.05) on Fashion-MNIST: mean test code activation in
  [0.03, 0.08], and a larger fraction of near-zero activations than a plain
  model of the same size (one sigmoid layer);
* denoising (Gaussian σ = 0.5, and masking p = 0.5) on Fashion-MNIST: PSNR
  of the output ≥ PSNR of the noisy input + 5 dB, and above a plain model's
  output on the same noisy images;
* contractive (784-512-64, sigmoid code) on Fashion-MNIST: encoder Jacobian
  Frobenius norm ≥ 3× smaller than the plain model's, test MSE within 20 % of it;
* VAE (dense, 500 hidden units, latent 20, Bernoulli) on binarised MNIST
  digits: the test ELBO improves monotonically over the first epochs and the
  IWAE bound (K = 100) is tighter than −ELBO; samples saved as a PNG grid;
* VQ-VAE (conv, K = 128) on Fashion-MNIST: codebook perplexity ≥ 32 and test
  MSE within 1.5× of a plain conv model with the same 7×7×4 code grid and
  continuous values.

Writes ``family.json`` (every figure and check) and PNGs to
``experiments/out/family/`` and prints a table.

  python -m experiments.family           # the full budget (tens of minutes on 2 cores)
  python -m experiments.family --quick   # a smoke test on the 8×8 digits: numbers mean little
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from flaxae import config as config_lib
from flaxae import viz
from flaxae.api import Run
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.data import load_dataset
from flaxae.objectives import BatchInfo, contractive, corrupt, sparse
from flaxae.objectives.base import CORRUPTION_TAG

FASHION = DataConfig(name="fashion_mnist", dir=str(common.FASHION))
DIGITS = DataConfig(name="mnist", dir=str(common.MNIST), binarize=True)
QUICK = DataConfig(name="digits")  # --quick: scikit-learn's 8×8 digits, offline.
NOISES = ("gaussian:0.5", "mask:0.5")
# The models, full size and --quick size.
SIGMOID = {False: dict(arch="dense", widths=(256,), code_activation="sigmoid"),
           True: dict(arch="dense", widths=(32,), code_activation="sigmoid")}
CONTRACTIVE = {False: dict(arch="dense", widths=(512, 64), code_activation="sigmoid"),
               True: dict(arch="dense", widths=(32, 8), code_activation="sigmoid")}
DENOISER = {False: dict(arch="dense", widths=(512, 128)),
            True: dict(arch="dense", widths=(32, 16))}
VAE = {False: dict(arch="dense", widths=(500, 20)), True: dict(arch="dense", widths=(32, 4))}
# A 7×7 grid of 4-channel vectors: 196 floats for the plain model (a quarter
# of the 784 pixels), 49 codes of 7 bits for VQ. (With 64 channels the plain
# code would be four times the image, and no discrete code could keep up.)
CONV_GRID = {False: dict(arch="conv", channels=(32, 4), latent_dim=0),
             True: dict(arch="conv", channels=(8, 4), latent_dim=0)}


def _data(data: DataConfig, args) -> DataConfig:
  if args.quick:
    return dataclasses.replace(QUICK, binarize=data.binarize)
  return data


def _test_x(data: DataConfig, args) -> np.ndarray:
  return load_dataset(_data(data, args), args.seed).test_x


def _run(name: str, data: DataConfig, model: ModelConfig, args, *, epochs: int,
         batch_size: int = 128, learning_rate: float = 1e-3) -> Run:
  """The trained run ``name`` (loaded when it is already complete)."""
  data = _data(data, args)
  if args.quick:
    epochs, batch_size = 2, 64
  cfg = Config(data=data, model=model,
               train=TrainConfig(epochs=epochs, batch_size=batch_size,
                                 learning_rate=learning_rate, seed=args.seed,
                                 eval_batch_size=500),
               checkpoint=CheckpointConfig(keep=1),
               run_dir=str(common.runs_dir(args) / f"family-{data.name}-{name}-e{epochs}"
                           f"-s{args.seed}"))
  return common.get_run(cfg)


def _batched(fn, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
  return np.concatenate([np.asarray(fn(jnp.asarray(x[i:i + batch_size])))
                         for i in range(0, len(x), batch_size)])


def jacobian_norm(run: Run, x: np.ndarray) -> float:
  """Mean Frobenius norm of the encoder's Jacobian over ``x``, exactly."""
  method = contractive.resolve_method(run.model, "auto")  # closed_form or exact.
  fn = jax.jit(lambda b: contractive.jacobian_sq_norm(run.model, run.variables, b,
                                                      method=method))
  return float(np.sqrt(_batched(fn, x)).mean())


def code_stats(run: Run, x: np.ndarray) -> dict[str, float]:
  """Mean code activation and fraction of near-zero activations over ``x``."""
  fn = jax.jit(lambda b: sparse.code_statistics(
      run.model.apply(run.variables, b, method="encode")))
  stats = [fn(jnp.asarray(x[i:i + 500])) for i in range(0, len(x), 500)]
  return {k: float(np.concatenate([np.asarray(s[k]) for s in stats]).mean())
          for k in stats[0]}


def check(rows: list[dict[str, Any]], name: str, figure: str, value: float,
          target: str, ok: bool) -> None:
  rows.append({"check": name, "figure": figure, "value": value, "target": target,
               "pass": "yes" if ok else "NO"})


def sparse_(args, rows, results) -> None:
  test_x, size = _test_x(FASHION, args), SIGMOID[args.quick]
  plain = _run("plain-sigmoid", FASHION, ModelConfig(kind="plain", **size), args,
               epochs=20)
  kl = _run(f"sparse-kl-b{args.beta:g}", FASHION, ModelConfig(
      kind="sparse", sparsity="kl", sparsity_target=0.05, sparsity_weight=args.beta,
      **size), args, epochs=20)
  r = {"plain": {**plain.evaluate(test_x), **code_stats(plain, test_x)},
       "sparse": {**kl.evaluate(test_x), **code_stats(kl, test_x)}}
  results["sparse"] = r
  act = r["sparse"]["mean_activation"]
  check(rows, "sparse KL ρ=0.05", "mean code activation", act, "in [0.03, 0.08]",
        0.03 <= act <= 0.08)
  check(rows, "sparse KL ρ=0.05", f"fraction of activations < {sparse.NEAR_ZERO}",
        r["sparse"]["near_zero"], f"≫ plain's {r['plain']['near_zero']:.3g}",
        r["sparse"]["near_zero"] > r["plain"]["near_zero"] + 0.1)


def contractive_(args, rows, results) -> None:
  """Both models' Jacobians exactly (64 VJPs); training uses Hutchinson's
  estimate with 4 probes, 16 times cheaper than the exact penalty."""
  test_x, size = _test_x(FASHION, args), CONTRACTIVE[args.quick]
  plain = _run("plain-contractive-size", FASHION, ModelConfig(kind="plain", **size), args,
               epochs=20)
  widths = "-".join(map(str, size["widths"]))
  cae = _run(f"contractive-{widths}-l{args.contractive_weight:g}", FASHION, ModelConfig(
      kind="contractive", contractive_weight=args.contractive_weight,
      jacobian="hutchinson", jacobian_probes=4, **size), args, epochs=20)
  r = {"plain": {**plain.evaluate(test_x), "jacobian_norm": jacobian_norm(plain, test_x)},
       "contractive": {**cae.evaluate(test_x), "jacobian_norm": jacobian_norm(cae, test_x)}}
  results["contractive"] = r
  ratio = r["plain"]["jacobian_norm"] / r["contractive"]["jacobian_norm"]
  check(rows, "contractive", "‖∂h/∂x‖_F, plain / contractive", ratio, "≥ 3", ratio >= 3)
  mse_ratio = r["contractive"]["mse"] / r["plain"]["mse"]
  check(rows, "contractive", "test MSE / plain's", mse_ratio, "≤ 1.2", mse_ratio <= 1.2)


def denoising_(args, rows, results) -> None:
  test_x, size = _test_x(FASHION, args), DENOISER[args.quick]
  plain = _run("plain-dense", FASHION, ModelConfig(kind="plain", **size), args, epochs=20)
  results["denoising"] = {}
  for noise in NOISES:
    name = "denoising-" + noise.replace(":", "")
    dae = _run(name, FASHION, ModelConfig(kind="denoising", noise=noise, **size), args,
               epochs=20)
    mine, theirs = dae.evaluate(test_x, noise=noise), plain.evaluate(test_x, noise=noise)
    results["denoising"][noise] = {"denoising": mine, "plain": theirs}
    gain = mine["denoised_psnr"] - mine["noisy_psnr"]
    check(rows, f"denoising {noise}", "PSNR gain over noisy input (dB)", gain, "≥ 5",
          gain >= 5)
    check(rows, f"denoising {noise}", "PSNR vs plain on noisy input (dB)",
          mine["denoised_psnr"], f"> plain {theirs['denoised_psnr']:.3g}",
          mine["denoised_psnr"] > theirs["denoised_psnr"])
    x = test_x[:10]
    keys = BatchInfo.whole(10).keys(jax.random.key(args.seed), CORRUPTION_TAG)
    noisy = np.asarray(corrupt(jnp.asarray(x), keys, noise))
    path = args.folder / f"family_{name}.png"
    viz.save_triplets(noisy, dae.reconstruct(noisy), x, path, image_shape=dae.feature_shape)
    results["pictures"].append(str(path))


def vae_(args, rows, results) -> None:
  run = _run("vae", DIGITS, ModelConfig(kind="vae", likelihood="bernoulli",
                                        **VAE[args.quick]), args, epochs=30)
  test_x = _test_x(DIGITS, args)
  elbos = [h["test/elbo"] for h in run.history]
  first = elbos[:5]
  monotone = all(a < b for a, b in zip(first, first[1:]))
  check(rows, "VAE", f"test ELBO, epochs 1-{len(first)} (nats)", first[-1],
        "increasing: " + ", ".join(f"{e:.1f}" for e in first), monotone)
  k100 = dataclasses.replace(run, config=config_lib.replace(
      run.config, model={"iwae_samples": 100}))
  figures = k100.evaluate(test_x)
  check(rows, "VAE", "IWAE NLL (K=100) vs −ELBO (nats)", figures["iwae_nll"],
        f"< {-figures['elbo']:.2f}", figures["iwae_nll"] < -figures["elbo"])
  results["vae"] = {"history_elbo": elbos, "test": figures}
  path = args.folder / "family_vae_samples.png"
  viz.save_samples(run.sample(64, seed=args.seed), path, cols=8,
                   title="VAE samples from the prior", image_shape=run.feature_shape)
  results["pictures"].append(str(path))


def vq_(args, rows, results) -> None:
  test_x, size = _test_x(FASHION, args), CONV_GRID[args.quick]
  channels = "-".join(map(str, size["channels"]))
  plain = _run(f"plain-conv-{channels}", FASHION, ModelConfig(
      kind="plain", code_activation="linear", **size), args, epochs=5)
  vqvae = _run(f"vq-conv-{channels}", FASHION, ModelConfig(
      kind="vq", codebook_size=128, **size), args, epochs=5)
  mine, theirs = vqvae.evaluate(test_x), plain.evaluate(test_x)
  grid = vqvae.model.code_shape
  results["vq"] = {"vq": mine, "plain": theirs, "code_grid": list(grid),
                   "vq_bits_per_image": grid[0] * grid[1] * float(np.log2(128)),
                   "plain_floats_per_image": int(np.prod(grid))}
  check(rows, "VQ-VAE K=128", "codebook perplexity", mine["perplexity"], "≥ 32",
        mine["perplexity"] >= 32)
  ratio = mine["mse"] / theirs["mse"]
  check(rows, "VQ-VAE K=128", f"test MSE / plain's ({mine['mse']:.4f} / {theirs['mse']:.4f})",
        ratio, "≤ 1.5", ratio <= 1.5)
  path = args.folder / "family_vq_reconstructions.png"
  h, w, c = grid
  viz.save_grid([test_x[:10], vqvae.reconstruct(test_x[:10]), plain.reconstruct(test_x[:10])],
                path, titles=["input", f"VQ-VAE ({h}×{w} codes of 7 bits)",
                              f"plain conv ({h}×{w}×{c} floats)"])
  results["pictures"].append(str(path))


PARTS = {"sparse": sparse_, "contractive": contractive_, "denoising": denoising_,
         "vae": vae_, "vq": vq_}


def main(argv: list[str] | None = None) -> dict:
  p = common.parser(__doc__.splitlines()[0])
  p.add_argument("--only", type=common.names_in(list(PARTS)), default=list(PARTS),
                 help="comma-separated parts: " + ", ".join(PARTS))
  p.add_argument("--beta", type=float, default=0.1, help="sparsity weight β")
  p.add_argument("--contractive_weight", type=float, default=1e-3)
  args = p.parse_args(argv)
  args.folder = common.out_dir("family", args)
  rows: list[dict[str, Any]] = []
  results: dict[str, Any] = {"quick": args.quick, "pictures": []}
  for name in args.only:
    PARTS[name](args, rows, results)
  results["checks"] = rows
  results["command"] = common.command("family", argv)
  common.write_json(args.folder / "family.json", results)
  common.publish([Path(p) for p in results["pictures"]], args)
  print(common.table(rows, ["check", "figure", "value", "target", "pass"]))
  return results


if __name__ == "__main__":
  common.cli(main)
  sys.exit(0)
