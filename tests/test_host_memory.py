"""Setup keeps freed blocks for reuse: a second tensor of a size the run has freed needs no new
pages (plumbing/host_memory.py)."""

import subprocess
import sys

import pytest

# In a fresh process: page faults while making and dropping a 64 MiB tensor, the last 20 of 40
# times. Without kept blocks each one faults in its 16,384 pages afresh; with them, only while
# the heap grows, in the first few (each aligned block asks a little more than the one freed).
FAULTS = """
import resource, sys, torch
from plumbing import host_memory
if sys.argv[1] == "keep":
    print(host_memory.keep_freed_memory(), file=sys.stderr)
for _ in range(20):
    torch.ones(1 << 24).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(1 << 24).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_blocks_are_reused():
    kept, as_it_is = page_faults("keep"), page_faults("as it is")
    assert as_it_is > 20 * 16_384 * 0.9  # the check sees the difference: fresh pages each time
    assert kept < 16_384 / 2, f"{kept} page faults with blocks kept, {as_it_is} without"
