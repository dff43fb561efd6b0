"""Smoke test: every experiment runs on its tiny --quick budget and writes its outputs."""

from __future__ import annotations

import json

import pytest

from experiments import anomaly, classics, common, compression, family, features, generation

needs_fashion = pytest.mark.skipif(not common.FASHION.is_dir(),
                                   reason=f"no Fashion-MNIST in {common.FASHION}")
needs_mnist = pytest.mark.skipif(not common.MNIST.is_dir(),
                                 reason=f"no MNIST digits in {common.MNIST}")


@pytest.mark.parametrize("module,args,files", [
    pytest.param(compression, [], ["compression.json", "rate_distortion_psnr.png",
                                   "rate_distortion_ssim.png", "compression_examples.png"],
                 marks=needs_fashion),
    (anomaly, [], ["anomaly_digits.json", "anomaly_digits_roc_hardest_class.png"]),
    pytest.param(features, [], ["features_fashion_mnist.json",
                                "features_fashion_mnist_latent_tsne.png"], marks=needs_fashion),
    (generation, [], ["generation.json", "vae_samples.png", "interpolation.png",
                      "denoising_triplets.png", "latent_2d_grid.png"]),
    # Every part of the family (on the 8×8 digits when --quick).
    (family, [], ["family.json", "family_vae_samples.png", "family_vq_reconstructions.png",
                  "family_denoising-gaussian0.5.png"]),
    # One setting of the six (each trains a single model and five seeds).
    pytest.param(classics, ["--data=mnist", "--models=shallow"],
                 ["classics.json", "classics_mnist_shallow.png"], marks=needs_mnist),
], ids=["compression", "anomaly", "features", "generation", "family", "classics"])
def test_quick(module, args, files, tmp_path, capsys):
  results = module.main(["--quick", f"--out={tmp_path}", *args])
  for name in files:
    assert (tmp_path / name).stat().st_size > 100, name
  saved = json.loads((tmp_path / files[0]).read_text())
  assert saved["command"].startswith(f"python -m experiments.{module.__name__.split('.')[-1]}")
  assert "|" in capsys.readouterr().out  # The printed table.
  assert results
