"""The allocator settings every step runs with (curation/memory.py)."""

from __future__ import annotations

import subprocess
import sys


def _in_fresh_process(code: str, **env: str) -> str:
    import os

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, **env})
    return result.stdout.strip()


PROBE = ("from curation.memory import tune_allocators; import pyarrow as pa; "
         "a = tune_allocators(); b = tune_allocators(); print(a == b, a, pa.default_memory_pool().backend_name)")


def test_allocators_are_tuned_once_and_arrow_uses_the_system_pool() -> None:
    same, tuned, pool = _in_fresh_process(PROBE).split()
    assert same == "True"
    if sys.platform.startswith("linux") and tuned == "True":  # glibc: Arrow allocates through malloc
        assert pool == "system"


def test_the_default_allocators_can_be_kept() -> None:
    same, tuned, pool = _in_fresh_process(PROBE, THRESHER_DEFAULT_ALLOCATORS="1").split()
    assert (same, tuned) == ("True", "False") and pool != "system"


TRIM_PROBE = """
import numpy as np
from curation.memory import release_freed_memory, tune_allocators
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) >> 10
tuned = tune_allocators()
blocks = [np.ones(1 << 20, dtype=np.uint8) for _ in range(200)]  # 200 MB on the heap (1 MB blocks)
held = rss()
del blocks[::2]  # every other block freed: holes the heap keeps (below its trim threshold)
kept = rss()
release_freed_memory()
print(tuned, held - kept, held - rss())
"""


def test_freed_memory_goes_back_between_units_of_work() -> None:
    """Tuned allocators keep freed heap memory; release_freed_memory() returns it to the OS."""
    tuned, before_trim, after_trim = _in_fresh_process(TRIM_PROBE).split()
    if not (sys.platform.startswith("linux") and tuned == "True"):
        return  # not glibc: nothing kept, nothing to release
    assert int(before_trim) < 20  # the 100 freed MB stayed in the process
    assert int(after_trim) >= 80  # and went back at the trim
