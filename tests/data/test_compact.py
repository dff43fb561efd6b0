"""Resident training sets as bytes: lossless or not at all."""

import jax
import numpy as np
import pytest

from flaxae.data import binarize, normalize
from flaxae.data.compact import byte_values, compact, decode, to_bytes

BYTES = np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)


def test_byte_values_are_the_normalisation_of_each_byte():
  table = byte_values()
  assert table.dtype == np.float32 and table.shape == (256,)
  np.testing.assert_array_equal(table, np.arange(256, dtype=np.float32) / np.float32(255))


def test_normalised_bytes_come_back_as_the_same_bytes():
  x = normalize(BYTES)  # (300, 28, 28, 1) float32.
  packed = to_bytes(x)
  assert packed.dtype == np.uint8 and packed.shape == x.shape
  np.testing.assert_array_equal(packed[..., 0], BYTES)
  # And back, bit for bit.
  np.testing.assert_array_equal(byte_values()[packed].view(np.uint32), x.view(np.uint32))


def test_binarized_images_pack_to_0_and_255():
  packed = to_bytes(binarize(normalize(BYTES)))
  assert set(np.unique(packed)) <= {0, 255}


@pytest.mark.parametrize("x", [
    np.arange(17, dtype=np.float32).reshape(1, 17) / 16,    # digits: sixteenths
    np.full((2, 3), 0.5 / 255, np.float32),                  # between two bytes
    np.full((2, 3), -0.0, np.float32),                       # not byte 0's +0.0
    normalize(BYTES).astype(np.float64),                      # not float32
], ids=["sixteenths", "between", "negative-zero", "float64"])
def test_values_that_are_no_bytes_stay_float(x):
  assert to_bytes(x) is None
  assert compact(x) is x


def test_one_odd_value_in_a_late_block_keeps_everything_float():
  x = normalize(np.zeros((5000, 4), np.uint8))
  x[4999, 3] = 0.3
  assert to_bytes(x) is None


@pytest.mark.parametrize("rows", [1, 1000])
def test_every_byte_decodes_in_compiled_code_to_the_hosts_value(rows):
  x = np.tile(np.arange(256, dtype=np.uint8), (rows, 1))
  out = np.asarray(jax.jit(decode)(x))
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out.view(np.uint32),
                                np.tile(byte_values().view(np.uint32), (rows, 1)))


def test_decode_passes_floats_through():
  x = np.full((2, 3), 0.25, np.float32)
  assert decode(x) is x
