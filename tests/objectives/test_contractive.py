"""Contractive: the Jacobian norm three ways, equal; training contracts it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxae.config import ModelConfig
from flaxae.errors import ConfigError
from flaxae.models import build_model
from flaxae.objectives import contractive

from tests.objectives.conftest import EPOCHS, SIGMOID_32
from tests.objectives.helpers import Trainer, digits

X = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1))


@functools.partial(jax.jit, static_argnums=0)
def _reference(model, variables, x):
  """‖J‖²_F per example from jax.jacfwd on one example at a time."""
  encode = lambda xi: model.apply(variables, xi[None], method="encode").reshape(-1)
  jac = jax.vmap(jax.jacfwd(encode))(x)
  return jnp.sum(jnp.square(jac.reshape(x.shape[0], -1)), axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 3), static_argnames="probes")
def _sq_norm(model, variables, x, method, keys=None, probes=1):
  return contractive.jacobian_sq_norm(model, variables, x, method=method, keys=keys,
                                      probes=probes)


def _model(**kw):
  model = build_model(ModelConfig(**kw), X.shape[1:])
  return model, model.init(jax.random.key(1), X)


def test_closed_form_equals_the_general_jacobian_on_a_sigmoid_layer():
  model, variables = _model(kind="contractive", widths=(16,))
  assert contractive.resolve_method(model, "auto") == "closed_form"
  closed = _sq_norm(model, variables, X, "closed_form")
  exact = _sq_norm(model, variables, X, "exact")
  np.testing.assert_allclose(closed, exact, rtol=1e-5)
  np.testing.assert_allclose(closed, _reference(model, variables, X), rtol=1e-5)


@pytest.mark.parametrize("kw", [
    dict(arch="conv", channels=(2,), latent_dim=0),            # Fewer code units: VJPs.
    dict(arch="dense", widths=(96,), code_activation="tanh"),  # Fewer inputs: JVPs.
])
def test_exact_jacobian_of_any_encoder(kw):
  model, variables = _model(kind="contractive", **kw)
  assert contractive.resolve_method(model, "auto") == "exact"
  np.testing.assert_allclose(
      _sq_norm(model, variables, X, "exact"),
      _reference(model, variables, X), rtol=1e-4)


def test_hutchinson_is_unbiased():
  model, variables = _model(kind="contractive", widths=(32, 8))
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(2), i))(jnp.arange(6))
  estimate = _sq_norm(model, variables, X, "hutchinson", keys, probes=400)
  np.testing.assert_allclose(estimate, _reference(model, variables, X), rtol=0.15)


def test_the_reported_norm_is_exact_when_training_uses_hutchinson():
  # sqrt of Hutchinson's unbiased estimate of ‖J‖²_F is biased low (≈ −9 % here).
  cfg = ModelConfig(kind="contractive", widths=(9, 5), jacobian="hutchinson",
                    jacobian_probes=1)
  model, variables = _model(**vars(cfg))
  figures = contractive.eval_figures(model, variables, X, jax.random.key(3), cfg)
  np.testing.assert_allclose(figures["jacobian_norm"],
                             np.sqrt(_reference(model, variables, X)), rtol=1e-5)


def test_closed_form_needs_one_sigmoid_layer():
  model, _ = _model(kind="contractive", widths=(16, 8))
  with pytest.raises(ConfigError, match="one dense sigmoid layer"):
    contractive.resolve_method(model, "closed_form")


def test_contractive_penalty_shrinks_the_jacobian(plain_sigmoid):
  model = ModelConfig(kind="contractive", contractive_weight=0.1, **SIGMOID_32)
  trained = Trainer(model, digits()[0]).epochs(EPOCHS)
  test_x = digits()[1]
  mine = trained.figures(test_x)["jacobian_norm"]
  plain = float(jnp.sqrt(_sq_norm(plain_sigmoid.module, plain_sigmoid.variables,
                                  jnp.asarray(test_x), "exact")).mean())
  assert mine < plain / 3
