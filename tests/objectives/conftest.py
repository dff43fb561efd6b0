"""A plain autoencoder to compare the variants with, trained once."""

import pytest

from flaxae.config import ModelConfig

from tests.objectives.helpers import Trainer, digits

# One dense sigmoid layer of 32 units: the size every variant below uses.
SIGMOID_32 = dict(widths=(32,), code_activation="sigmoid")
EPOCHS = 10


@pytest.fixture(scope="session")
def plain_sigmoid() -> Trainer:
  return Trainer(ModelConfig(kind="plain", **SIGMOID_32), digits()[0]).epochs(EPOCHS)
