"""Sparse: the KL-ρ penalty pulls the code's mean activation to ρ; L1 as written."""

import jax
import jax.numpy as jnp
import numpy as np

from flaxae.config import ModelConfig
from flaxae.models import build_model
from flaxae.objectives import sparse

from tests.objectives.conftest import EPOCHS, SIGMOID_32
from tests.objectives.helpers import Trainer, digits


def test_kl_sparsity_pulls_mean_activation_to_rho(plain_sigmoid):
  model = ModelConfig(kind="sparse", sparsity="kl", sparsity_target=0.05, **SIGMOID_32)
  trained = Trainer(model, digits()[0]).epochs(EPOCHS)
  test_x = digits()[1]
  mine = trained.figures(test_x)
  plain = {k: float(v.mean()) for k, v in sparse.eval_figures(
      plain_sigmoid.module, plain_sigmoid.variables, test_x, None, None).items()}
  assert 0.03 <= mine["mean_activation"] <= 0.1
  assert plain["mean_activation"] > 0.3
  assert mine["near_zero"] > plain["near_zero"] + 0.2


def test_kl_penalty_is_zero_at_rho_and_positive_elsewhere():
  np.testing.assert_allclose(sparse.kl_bernoulli(0.05, jnp.full((3,), 0.05)), 0.0, atol=1e-7)
  assert np.all(np.asarray(sparse.kl_bernoulli(0.05, jnp.array([0.01, 0.2, 0.9]))) > 0)
  assert np.isfinite(float(sparse.kl_bernoulli(0.05, jnp.array(0.0))))  # Clipped.


def test_l1_penalty_and_code_statistics_as_written():
  cfg = ModelConfig(kind="sparse", sparsity="l1", sparse_l1=0.01, widths=(16,))
  model = build_model(cfg, (8, 8, 1))
  x = digits()[0][:32]
  variables = model.init(jax.random.key(0), x)
  out = sparse.sparse(model, variables, x, jax.random.key(1), cfg)
  h = np.asarray(model.apply(variables, x, method="encode"))
  assert h.min() >= 0.0  # auto → relu for l1.
  np.testing.assert_allclose(out.metrics["sparsity"], 0.01 * np.abs(h).sum(-1).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(out.loss, out.metrics["recon"] + out.metrics["sparsity"],
                             rtol=1e-6)
  np.testing.assert_allclose(out.metrics["near_zero"], (np.abs(h) < sparse.NEAR_ZERO).mean(),
                             rtol=1e-6)
