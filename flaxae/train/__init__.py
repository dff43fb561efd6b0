"""Training: state, pure step, parallel wrappers and the loop."""

from flaxae.train.optimizer import make_optimizer, make_schedule
from flaxae.train.state import TrainState, create_state
from flaxae.train.step import eval_step, train_step

__all__ = ["TrainState", "create_state", "eval_step", "make_optimizer",
           "make_schedule", "train_step"]
