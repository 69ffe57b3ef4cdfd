"""``gradinv.arrays.to_numpy``: one tensor-to-numpy conversion for the filter, the privacy filters and the metrics."""

import numpy as np
import pytest
import torch

from gradinv.arrays import to_numpy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.uint8])
def test_a_tensor_keeps_its_values_and_dtype(dtype):
    tensor = torch.arange(6).reshape(2, 3).to(dtype)
    array = to_numpy(tensor)
    assert array.dtype == torch.empty(0, dtype=dtype).numpy().dtype
    np.testing.assert_array_equal(array, np.arange(6).reshape(2, 3))


def test_bfloat16_becomes_float32_exactly():
    tensor = torch.tensor([1.0, -2.5, 3.140625, 1e-3], dtype=torch.bfloat16)
    array = to_numpy(tensor)
    assert array.dtype == np.float32
    assert torch.equal(torch.from_numpy(array).to(torch.bfloat16), tensor)


def test_a_tensor_that_requires_grad_is_detached():
    tensor = torch.ones(3, requires_grad=True)
    np.testing.assert_array_equal(to_numpy(tensor * 2), np.full(3, 2.0, dtype=np.float32))


def test_copy_owns_its_memory_and_the_default_may_share_it():
    tensor = torch.zeros(3)
    shared, owned = to_numpy(tensor), to_numpy(tensor, copy=True)
    tensor += 1
    np.testing.assert_array_equal(shared, np.ones(3))
    np.testing.assert_array_equal(owned, np.zeros(3))

    source = np.zeros(2)
    assert to_numpy(source) is source
    assert not np.shares_memory(to_numpy(source, copy=True), source)


def test_array_likes_become_arrays():
    np.testing.assert_array_equal(to_numpy([[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]]))
    assert to_numpy(2.5).shape == ()
