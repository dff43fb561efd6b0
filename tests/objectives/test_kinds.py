"""Every kind on every backbone runs through the compiled chunk, and one device
equals four for every kind that draws random numbers, with both strategies."""

import functools

import chex
import jax
import numpy as np
import pytest

from flaxae.config import ModelConfig
from flaxae.train import parallel
from flaxae.train.step import eval_step, summarize_eval

from tests.objectives.helpers import Trainer, digits
from tests.train.helpers import rel_diff

KINDS = ["plain", "sparse", "denoising", "contractive", "vae", "vq"]
DENSE = dict(arch="dense", widths=(16, 8))
CONV = dict(arch="conv", channels=(4,), latent_dim=0)  # A spatial 4×4×4 code.
EXPECTED = {
    "plain": {"loss"},
    "sparse": {"loss", "recon", "sparsity", "mean_activation", "near_zero"},
    "denoising": {"loss"},
    "contractive": {"loss", "recon", "contractive", "jacobian_sq"},
    "vae": {"loss", "elbo", "nll", "kl", "kl_weight"},
    "vq": {"loss", "recon", "commitment", "perplexity", "codes_used", "restarts"},
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_on_the_conv_backbone(kind):
  # The dense backbone trains in test_four_devices_equal_one, for every kind.
  trainer = Trainer(ModelConfig(kind=kind, **CONV), digits()[0][:256], batch_size=64)
  before = jax.device_get(trainer.state.params)
  trainer.advance(4)
  assert int(trainer.state.step) == 4 and int(trainer.state.skipped) == 0
  chex.assert_tree_all_finite(trainer.state)
  assert EXPECTED[kind] | {"grad_norm", "skipped"} <= set(trainer.metrics)
  assert all(np.isfinite(v) for v in trainer.metrics.values())
  assert rel_diff(trainer.state.params, before) > 1e-3


# The dense backbone of every kind trains here, with every source of randomness
# (dropout, input noise, corruption, probes, samples, restarts) and every batch
# statistic (sparse's mean activation, the codebook's usage and moving averages).
# Plain's only randomness, the regularisers, is covered by sparse, denoising and
# vae; the Hutchinson probes (per-example keys, like the corruption) by the
# per-device strategy alone, to save a compilation.
RANDOM = {
    "plain": ModelConfig(kind="plain", **DENSE),
    "sparse": ModelConfig(kind="sparse", sparsity="kl", dropout=0.2, **DENSE),
    "denoising": ModelConfig(kind="denoising", noise="salt_pepper:0.2", input_noise=0.1,
                             **DENSE),
    "contractive": ModelConfig(kind="contractive", jacobian="hutchinson", widths=(16, 8)),
    "vae": ModelConfig(kind="vae", kl_warmup_steps=10, dropout=0.1, **DENSE),
    "vq": ModelConfig(kind="vq", codebook_size=16, codebook_dim=2, ema_decay=0.5,
                      dead_code_restart=0.9, **DENSE),
}
BOTH = ("jit", "shard_map")
ACROSS_DEVICES = {"sparse": BOTH, "denoising": BOTH, "contractive": ("shard_map",),
                  "vae": BOTH, "vq": BOTH}


@pytest.mark.parametrize("kind", KINDS)
def test_dense_trains_and_four_devices_equal_one(kind):
  model, data = RANDOM[kind], digits()[0]
  one = Trainer(model, data, batch_size=32)
  init = jax.device_get(one.state)
  one.advance(20)
  assert int(one.state.skipped) == 0 and EXPECTED[kind] <= set(one.metrics)
  assert rel_diff(one.state.params, init.params) > 1e-2
  if kind == "vq":
    assert one.metrics["restarts"] > 0  # The restart path ran.
  if ACROSS_DEVICES.get(kind) and jax.device_count() < 4:
    pytest.skip(f"trained on 1 device; the 4-device half needs 4, {jax.device_count()} "
                "available")
  for strategy in ACROSS_DEVICES.get(kind, ()):
    four = Trainer(model, data, batch_size=32, strategy=strategy, num_devices=4,
                   state=init).advance(20)
    assert rel_diff(four.state.params, one.state.params) <= 1e-5, strategy
    assert rel_diff(four.state.opt_state, one.state.opt_state) <= 1e-5, strategy
    if one.state.model_state:
      assert rel_diff(four.state.model_state, one.state.model_state) <= 1e-5, strategy


@pytest.mark.parametrize("model,noise", [
    (ModelConfig(kind="vae", iwae_samples=3, **DENSE), ""),
    (ModelConfig(kind="contractive", jacobian="hutchinson", **DENSE), ""),
    (ModelConfig(kind="denoising", noise="gaussian:0.5", **DENSE), "gaussian:0.5"),
])
def test_test_figures_do_not_depend_on_the_batch_size_or_the_devices(model, noise):
  # Each example's random draws (the VAE's samples, the probes, the corruption)
  # are keyed by its position in the test set, not in its evaluation batch.
  trainer = Trainer(model, digits()[0], batch_size=32).advance(3)
  x = digits()[1][:203]

  def figures(batch_size, devices):
    mesh = parallel.make_mesh(devices)
    evaluate = parallel.make_eval(functools.partial(
        eval_step, model=trainer.module, objective=None, cfg=model, rng=jax.random.key(0),
        noise=noise), mesh)
    return parallel.evaluate(evaluate, trainer.variables, x, batch_size, devices,
                             functools.partial(summarize_eval, cfg=model))

  whole = figures(1000, 1)
  random = {"vae": "iwae_nll", "contractive": "jacobian_norm", "denoising": "noisy_psnr"}
  assert random[model.kind] in whole
  counts = [(90, 1), (64, 1)] + ([(90, 4)] if jax.device_count() >= 4 else [])
  for batch_size, devices in counts:
    other = figures(batch_size, devices)
    for k, v in whole.items():
      assert other[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (k, batch_size, devices)
