"""The same autoencoders in Keras 3, on its TensorFlow or JAX backend.

``python -m benchmarks.peer_keras --backend tensorflow --model dense`` prints
one JSON line. The path is the ordinary Keras one: ``compile`` then ``fit`` on
in-memory arrays (shuffled every epoch), each epoch timed by a callback; the
first epoch includes tracing and compilation. Inference is ``predict``.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from benchmarks import common


def _backend_from_argv(argv) -> str:
  argv = list(sys.argv[1:] if argv is None else argv)
  for i, a in enumerate(argv):
    if a.startswith("--backend="):
      return a.split("=", 1)[1]
    if a == "--backend" and i + 1 < len(argv):
      return argv[i + 1]
  return "tensorflow"


def _impl(backend: str) -> str:
  return "keras-tf" if backend == "tensorflow" else f"keras-{backend}"


def build_model(keras, model: str):
  """784-256-64-256-784, or the conv AE: 2 stride-2 convs, 2 transposed convs, logits."""
  layers = keras.layers
  if model == "dense":
    w1, code = common.DENSE_WIDTHS
    return keras.Sequential([
        keras.Input(common.IMAGE_SHAPE), layers.Flatten(),
        layers.Dense(w1, activation="relu"), layers.Dense(code),
        layers.Dense(w1, activation="relu"), layers.Dense(784),
        layers.Reshape(common.IMAGE_SHAPE)])
  c1, c2 = common.CONV_CHANNELS
  k = common.KERNEL_SIZE
  return keras.Sequential([
      keras.Input(common.IMAGE_SHAPE),
      layers.Conv2D(c1, k, strides=2, padding="same", activation="relu"),
      layers.Conv2D(c2, k, strides=2, padding="same", activation="relu"),
      layers.Conv2DTranspose(c2, k, strides=2, padding="same", activation="relu"),
      layers.Conv2DTranspose(c1, k, strides=2, padding="same", activation="relu"),
      layers.Conv2D(1, k, padding="same")])


def _versions(keras, backend: str) -> dict[str, str]:
  versions = {"keras": keras.__version__}
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    versions["tensorflow"] = tf.__version__
  return versions


def _set_threads(backend: str, threads: int) -> None:
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _set_precision(backend: str, precision: str) -> None:
  """Exact float32 or TF32 products on a GPU (CPUs compute float32 either way)."""
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")
  else:
    from flaxae.benchmark import set_matmul_precision  # pylint: disable=import-outside-toplevel
    set_matmul_precision(precision)


def run(args) -> dict[str, Any]:
  _set_threads(args.backend, args.threads)
  _set_precision(args.backend, args.precision)
  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(args.seed)
  if args.dtype == "bfloat16":  # Keras's mixed precision: float32 variables.
    keras.config.set_dtype_policy("mixed_bfloat16")
  bs = args.batch_size
  steps = common.steps_per_rep(bs, args.samples)
  n = steps * bs
  x = common.make_images(n, args.seed)
  model = build_model(keras, args.model)
  model.compile(
      optimizer=keras.optimizers.Adam(common.LEARNING_RATE, epsilon=common.ADAM_EPS),
      loss=keras.losses.BinaryCrossentropy(from_logits=True))

  class Timer(keras.callbacks.Callback):

    def __init__(self):
      super().__init__()
      self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
      self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      self.times.append(time.perf_counter() - self._t0)

  timer = Timer()
  hist = model.fit(x, x, batch_size=bs, epochs=args.reps + 1, shuffle=True, verbose=0,
                   callbacks=[timer])
  first, times = timer.times[0], timer.times[1:]
  train = common.summarize(times, n)
  record = {
      "impl": _impl(args.backend),
      "arch": args.model, "batch_size": bs, "devices": 1, "steps_per_rep": steps,
      "samples_per_rep": n, "train": train, "first_call_s": first,
      "compile_s": max(first - train["median_s"], 0.0),
      "loss": float(hist.history["loss"][-1]), "jit_compile": bool(model.jit_compile),
      "threads": args.threads, "versions": _versions(keras, args.backend),
      "dtype": args.dtype, "precision": args.precision,
  }
  if not args.no_inference:
    t0 = time.perf_counter()
    model.predict(x[:bs], batch_size=bs, verbose=0)
    record["infer_first_call_s"] = time.perf_counter() - t0
    times = []
    for _ in range(args.reps):
      t0 = time.perf_counter()
      model.predict(x, batch_size=bs, verbose=0)
      times.append(time.perf_counter() - t0)
    record["infer"] = common.summarize(times, n)
  record["peak_rss_mb"] = common.peak_rss_mb()
  return record


def main(argv=None) -> None:
  # The backend must be chosen before Keras is first imported.
  os.environ["KERAS_BACKEND"] = _backend_from_argv(argv)
  args = common.peer_args(argv, "Keras 3 throughput", lambda p: p.add_argument(
      "--backend", choices=("tensorflow", "jax"), default="tensorflow"))
  try:
    common.emit(run(args))
  except Exception as e:  # pylint: disable=broad-except
    common.emit({"impl": _impl(args.backend), "arch": args.model,
                 "batch_size": args.batch_size,
                 "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                 "traceback": traceback.format_exc()[-2000:]})


if __name__ == "__main__":
  main()
