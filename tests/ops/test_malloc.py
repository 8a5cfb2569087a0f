"""The web processes' allocator settings (cakra.config.malloc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from cakra.config.malloc import malloc_tune_for_large_bodies


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_thresholds_are_set_on_glibc() -> None:
    assert malloc_tune_for_large_bodies() is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_large_blocks_are_reused_instead_of_mapped_afresh() -> None:
    """What the setting is for: a request's ~400 KB blocks, freed and
    allocated again, come back from the heap without new page faults."""
    probe = """
import resource, sys
from cakra.config.malloc import malloc_tune_for_large_bodies
if sys.argv[1] == "tuned":
    malloc_tune_for_large_bodies()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
blocks = [bytes(400_000) for _ in range(100)]
del blocks
before = faults()
for _ in range(20):
    blocks = [bytes(400_000) for _ in range(100)]
    del blocks
print(faults() - before)
"""
    counts = {
        mode: int(subprocess.check_output([sys.executable, "-c", probe, mode], text=True))  # noqa: S603
        for mode in ("plain", "tuned")
    }
    # Untuned, glibc maps (and faults in) most of the 2,000 blocks afresh
    # (~100 pages each; ~67,000 faults here). Tuned, they are reused from
    # the heap (~6,000 faults, from the rest of the interpreter).
    assert counts["tuned"] * 4 < counts["plain"], counts
