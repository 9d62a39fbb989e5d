"""Timing and memory probes shared by the benchmarks: exclusive per-component timers, repeated wall
clocks (median and fastest), and the peak resident memory of one call (CPU)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import statistics
import time
import types
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ComponentTimer:
    """Exclusive wall time (and this process's CPU time) spent inside chosen methods, by category.

    Each wrapped method adds its own time minus the time of wrapped methods it calls, so nested
    components (a VQ encoder called inside an encoder wrapper) are never counted twice and the
    categories add up to the time spent inside any wrapped call. ``durations`` keeps every call's
    exclusive wall time, so per-call costs can be read off the very runs being measured;
    ``cpu_seconds`` is the same split in CPU time of this process (all its threads: robust to other
    processes' load). Use as a context manager: the original methods come back on exit.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.durations: dict[str, list[float]] = defaultdict(list)
        self._child_seconds: list[list[float]] = []
        self._wrapped: list[tuple[Any, str, Any]] = []

    def wrap(self, obj: Any, method: str, category: str) -> None:
        """Time ``obj.method``: an instance attribute shadows a class method, a module's (or class's) own
        attribute is replaced, until :meth:`restore`. Module functions are timed when they are called
        through the module's namespace (``module.f`` or a bare ``f`` inside that module)."""
        original = getattr(obj, method)
        own = vars(obj).get(method) if isinstance(obj, (types.ModuleType, type)) else None

        @functools.wraps(original)
        def timed(*args, **kwargs):
            self._child_seconds.append([0.0, 0.0])
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                child, child_cpu = self._child_seconds.pop()
                self.seconds[category] += elapsed - child
                self.cpu_seconds[category] += cpu - child_cpu
                self.calls[category] += 1
                self.durations[category].append(elapsed - child)
                if self._child_seconds:
                    self._child_seconds[-1][0] += elapsed
                    self._child_seconds[-1][1] += cpu

        setattr(obj, method, timed)
        self._wrapped.append((obj, method, own))

    def reset(self) -> None:
        self.seconds.clear()
        self.cpu_seconds.clear()
        self.calls.clear()
        self.durations.clear()

    def restore(self) -> None:
        for obj, method, own in reversed(self._wrapped):
            if own is None:
                delattr(obj, method)
            else:
                setattr(obj, method, own)
        self._wrapped.clear()

    def __enter__(self) -> ComponentTimer:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


@dataclass
class Timing:
    """Seconds of ``repeats`` calls after ``warmup`` untimed ones: wall clock (median, fastest) and
    this process's CPU time of the fastest-CPU call (less disturbed by other processes' load)."""

    median: float
    minimum: float
    repeats: int
    cpu_minimum: float


def time_call(fn: Callable[[], Any], repeats: int = 1, warmup: int = 0, max_seconds: float | None = None) -> Timing:
    """Median and minimum wall time of ``fn()``.

    Args:
        fn: the call to time.
        repeats: timed calls (at least 1).
        warmup: untimed calls first (first-call allocations and kernel selection).
        max_seconds: stop repeating once this much time was spent timing (at least one call runs).
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    cpu_times: list[float] = []
    for _ in range(max(1, repeats)):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        if max_seconds is not None and sum(times) > max_seconds:
            break
    return Timing(statistics.median(times), min(times), len(times), min(cpu_times))


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc ``malloc_trim``), so
    that the resident size before a measured call counts live memory, not freed memory kept by malloc."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def measure_peak_rss(fn: Callable[[], Any]) -> tuple[Any, dict]:
    """Run ``fn()`` once and report its resident-memory peak.

    Free heap memory is released and the high-water mark reset before the call, so ``peak_rss_mb``
    is this call's peak and ``peak_over_start_mb`` (peak minus the resident memory just before) is
    the memory the call itself needed. Where the reset is impossible the fields are None rather than
    a stale process peak.

    Returns:
        ``(fn's result, {"peak_rss_mb", "start_rss_mb", "peak_over_start_mb"})``.
    """
    release_free_memory()
    reset = _reset_peak_rss()
    start_kb = _status_kb("VmRSS")
    result = fn()
    peak_kb = _status_kb("VmHWM") if reset else None
    if peak_kb is None or start_kb is None:
        return result, {"peak_rss_mb": None, "start_rss_mb": None, "peak_over_start_mb": None}
    return result, {
        "peak_rss_mb": peak_kb / 1024,
        "start_rss_mb": start_kb / 1024,
        "peak_over_start_mb": (peak_kb - start_kb) / 1024,
    }


def count_parameters(*modules) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())
