"""The anonymous resident memory (Linux's RssAnon) of a process tree, and its peak while a
command runs: what a machine must really have for a run. The checkpoint's memory-mapped pages
and the libraries' code are file-backed, so they do not count. Shared by benchmarks/ (the
figures in docs/performance.md) and the suite's memory test (tests/test_memory.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

# The default run's peak anonymous memory on the embedded checkpoint (issue #44): at most this,
# checked by benchmarks/notebook_runtime.py and by tests/test_memory.py.
DEFAULT_RUN_TARGET_BYTES = 1.0e9


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def anon_bytes(pid: int) -> int:
    """RssAnon of one process (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_anon_bytes(root: int) -> int:
    """Sum of RssAnon over `root` and all its descendants."""
    return sum(anon_bytes(pid) for pid in descendants(root))


def is_kernel(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ipykernel" in f.read()
    except OSError:
        return False


class KernelPeak:
    """`with KernelPeak(pid) as peak:` samples, every `interval` seconds while the block runs,
    the RssAnon of the Jupyter kernels started below process `pid` (nbval's, nbclient's): the
    largest sum seen, in bytes, is `peak.most`. The process that drives the kernel is left out:
    its memory is the runner's, not the notebook's. With `until`, sampling stops once that
    file exists (what runs after it is not counted)."""

    def __init__(self, pid: int, interval: float = 0.02, until: Path | None = None):
        self.pid, self.interval, self.until, self.most = pid, interval, until, 0
        self._done = threading.Event()

    def _sample(self) -> None:
        kernels: list[int] = []
        while not self._done.is_set() and not (self.until and self.until.exists()):
            if not kernels or not all(os.path.exists(f"/proc/{k}") for k in kernels):
                kernels = [pid for pid in descendants(self.pid) if is_kernel(pid)]
            self.most = max(self.most, sum(anon_bytes(pid) for pid in kernels))
            time.sleep(self.interval if kernels else 5 * self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True, name="kernel memory")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        return False
