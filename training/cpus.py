"""The CPU cores this process may use, as a container sees them (one helper for training and serving)."""

from __future__ import annotations

import math
import os


def available_cpus() -> int:
    """CPU cores this process may use: the affinity mask, capped by a cgroup v2/v1 CPU quota
    (rounded up: a quota of 1.5 CPUs gives 2). ``os.cpu_count()`` counts the host's cores instead,
    which oversubscribes a container limited to a few of them."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "<quota|max> <period>"
            q, period = f.read().split()[:2]
        return None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            q1 = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            p1 = int(f.read())
        return None if q1 <= 0 else q1 / p1
    except (OSError, ValueError):
        return None
