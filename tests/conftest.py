"""Shared fixtures: every compiled SIMD path this CPU supports, and thread counts."""
import pytest

import fastdrop
from fastdrop import _core

ISAS = _core.isa_supported()


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once on each kernel path (ref, avx2, avx512) this CPU can run."""
    old = _core.isa()
    _core.set_isa(request.param)
    try:
        yield request.param
    finally:
        _core.set_isa(old)


@pytest.fixture
def threads():
    """Set the thread count inside a test; restored afterwards."""
    old = fastdrop.get_num_threads()
    yield fastdrop.set_num_threads
    fastdrop.set_num_threads(old)
