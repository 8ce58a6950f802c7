"""keep_freed_host_memory takes effect on Linux/glibc and changes no result."""
from __future__ import annotations
import sys

import pytest
import torch

from engine.host_memory import keep_freed_host_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_takes_effect_and_results_unchanged():
    torch.manual_seed(0)
    x = torch.randn(8, 64, 64)
    before = (x @ x.transpose(1, 2)).sum()
    assert keep_freed_host_memory() is True
    assert torch.equal((x @ x.transpose(1, 2)).sum(), before)
