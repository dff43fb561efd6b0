"""Native kernels for what XLA's CPU backend does slowly.

:mod:`flaxae.kernels.gemm`: float32 matrix products through MKL, an XLA FFI
custom call on CPU (``train.cpu_matmuls=mkl``), XLA's own products on other
backends. :mod:`flaxae.kernels.native` builds and registers the kernel.
"""

from flaxae.kernels.gemm import MATMULS, dot_general, dot_general_for, matmul, product

__all__ = ["MATMULS", "dot_general", "dot_general_for", "matmul", "product"]
