"""Keep freed memory in the process for the next tensor of its size — plumbing only.

glibc's malloc (Linux) hands every allocation above its mmap threshold, at most 32 MiB, to the
kernel on its own and returns it when freed; the next tensor of that size starts on fresh pages,
one page fault per 4 KiB. The lessons make and drop tensors as large as the vocabulary hundreds
of times (a [128,256 × dim] gradient at each training step, [positions × 128,256]
log-probabilities per held-out sentence). On the 2-core machines the project is tested on, the
whole run on the embedded model took about a tenth less once freed blocks were kept
(docs/performance.md). Raising the thresholds once, in setup, keeps them in the process's heap
for reuse. It changes where memory comes from, never what is computed; the peak is the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1  # free memory at the heap's top beyond this goes back to the kernel
M_MMAP_THRESHOLD = -3  # allocations beyond this get their own mapping, unmapped when freed
KEEP_UP_TO = 1 << 30  # bytes: tensors up to 1 GiB come from (and go back to) the heap


def keep_freed_memory() -> str:
    """Raise glibc's thresholds where glibc is the allocator; say what was done, for the summary."""
    if not sys.platform.startswith("linux"):
        return "the system's allocator, as it is"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return "the system's allocator, as it is (no glibc)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, KEEP_UP_TO) != 1 or mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO) != 1:
        return "the system's allocator, as it is (glibc refused larger thresholds)"
    return f"freed blocks up to {KEEP_UP_TO >> 30} GiB kept for reuse (glibc's malloc)"
