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


@pytest.mark.parametrize("module,argv,message", [
    (family, ["--only=sparse,bogus"], "unknown 'bogus'; known: sparse, contractive"),
    (classics, ["--models=shallow,bogus"], "unknown 'bogus'"),
    (compression, ["--latents=16,abc"], "'abc' is not an integer"),
    (anomaly, ["--epochs=-3"], "must be at least 0"),
])
def test_bad_arguments_are_refused_before_any_training(module, argv, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    module.main(["--quick", *argv])
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err


def test_a_flaxae_error_ends_the_program_with_one_line_and_status_2(monkeypatch, capsys):
  from flaxae.errors import DataError  # pylint: disable=import-outside-toplevel

  def missing():
    raise DataError("data folder /x/fashion_mnist does not exist")

  with pytest.raises(SystemExit) as exit_:
    common.cli(missing)
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert "error: data folder /x/fashion_mnist does not exist" in err
  assert "FLAXAE_SHARED_DATA" in err and "Traceback" not in err
