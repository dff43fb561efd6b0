"""What autoencoders are used for, built on the public API (:mod:`flaxae.api`).

- :mod:`flaxae.apps.compress`: images to real bytes and back (``flaxae compress``),
  with :mod:`flaxae.apps.codec` (the entropy model and range coder) and
  :mod:`flaxae.apps.container` (the file format).
- :mod:`flaxae.apps.anomaly`: a scikit-learn outlier detector (``flaxae detect``).
- :mod:`flaxae.apps.features`: embeddings, linear probes, clustering (``flaxae embed``).
- :mod:`flaxae.apps.generate`: latent grids, interpolation, traversals, samples.

Each module is imported on its own (``from flaxae.apps import compress``), so
importing this package costs nothing.
"""
