"""Clocks, memory probes, statistics and machine facts for the benchmark (no model code here).

Time: `time.perf_counter`, with `torch.cuda.synchronize()` before every reading on CUDA so a stage's
time includes its kernels. Memory:
- CPU: the process's resident set (RSS). Before a measured pass, freed heap memory is handed back to
  the OS (glibc `malloc_trim`) and the kernel's peak-RSS counter is reset (`/proc/self/clear_refs`,
  value 5); a stage's peak is then VmHWM minus the RSS at the start of the pass, i.e. the new
  resident memory that the pass needed at its highest point. Without clear_refs (non-Linux), a
  1 ms psutil sampler gives the same quantity less exactly.
- CUDA: `torch.cuda.max_memory_allocated()` minus the allocated bytes at the start of the pass.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import time
from typing import Sequence

import numpy as np
import torch


CLOCKS = ("wall", "cpu")


class Clock:
    """Wall-clock seconds (kind 'wall'); synchronises CUDA before each reading.

    kind 'cpu' reads this process's CPU time instead (all threads summed, `time.process_time`): the
    work a stage did, which other processes on a shared machine barely change, where wall time grows
    with their load. CPU only (kernels on a GPU do not count as process time).
    """

    def __init__(self, device: torch.device | str, kind: str = "wall") -> None:
        if kind not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {kind!r}")
        self.cuda = torch.device(device).type == "cuda"
        if self.cuda and kind == "cpu":
            raise ValueError("--clock cpu measures CPU work; on CUDA use the wall clock")
        self.kind = kind

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.process_time() if self.kind == "cpu" else time.perf_counter()


def summarize(values: Sequence[float], keep: Sequence[bool] | None = None) -> dict:
    """Median, p10 and p90 (linear interpolation) of repeated measurements, plus the raw values.

    `keep` marks the measurements to use (e.g. those not disturbed by other processes); when it
    keeps none, all are used. 'values' lists every measurement, 'kept' the mask applied.
    """
    values = [float(v) for v in values]
    keep = [True] * len(values) if keep is None else [bool(k) for k in keep]
    if not any(keep):
        keep = [True] * len(values)
    arr = np.asarray([v for v, k in zip(values, keep) if k], dtype=float)
    if arr.size == 0:
        return {"median": None, "p10": None, "p90": None, "n": 0, "values": [], "kept": []}
    p10, med, p90 = np.percentile(arr, [10, 50, 90])
    return {"median": float(med), "p10": float(p10), "p90": float(p90), "n": int(arr.size), "values": values,
            "kept": keep}


# ---- other processes ------------------------------------------------------------------------------
def _system_busy_seconds() -> float | None:
    """CPU seconds all processes (and the hypervisor's steal) have used since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Share of the machine's CPU capacity that other processes took during a region (Linux only).

    On a shared machine a pass that ran beside someone else's job is slower for reasons unrelated to
    the model; `stop()` returns that share (0 = machine to ourselves) or None where /proc/stat is absent.
    """

    def start(self) -> "OtherLoad":
        self.t0, self.busy0, self.own0 = time.perf_counter(), _system_busy_seconds(), time.process_time()
        return self

    def stop(self) -> float | None:
        busy = _system_busy_seconds()
        if busy is None or self.busy0 is None:
            return None
        wall = max(time.perf_counter() - self.t0, 1e-9)
        others = (busy - self.busy0) - (time.process_time() - self.own0)
        return max(0.0, others / (wall * (os.cpu_count() or 1)))


def wait_until_quiet(threshold: float, max_wait_s: float, log=print) -> float | None:
    """Sample 1 s windows until other processes use less than `threshold` of the CPU (or time runs out)."""
    end = time.perf_counter() + max_wait_s
    while True:
        probe = OtherLoad().start()
        time.sleep(1.0)
        share = probe.stop()
        if share is None or share < threshold or time.perf_counter() >= end:
            return share
        log(f"  waiting for a quiet machine: other processes use {100 * share:.0f}% of the CPU")


# ---- memory -------------------------------------------------------------------------------------
def _read_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    value = _read_status_kb("VmRSS")
    if value is not None:
        return value
    import psutil

    return psutil.Process().memory_info().rss


def release_free_heap() -> None:
    """Give freed malloc memory back to the OS so RSS deltas see new allocations (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class _Sampler:
    """Polls RSS every millisecond in a thread; the fallback where the peak counter cannot be reset."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_bytes())


class PeakMemory:
    """Peak memory of each stage of one pass, above the level at the start of the pass (bytes)."""

    def __init__(self, device: torch.device | str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.stages: dict[str, int] = {}
        self.base = 0
        self._sampler: _Sampler | None = None

    @property
    def what(self) -> str:
        if self.cuda:
            return "torch.cuda.max_memory_allocated above the bytes allocated at the start of the pass"
        return "peak RSS (VmHWM after /proc/self/clear_refs) above the RSS at the start of the pass, after malloc_trim"

    def start(self) -> None:
        self.stages = {}
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            self.base = torch.cuda.memory_allocated()
        else:
            release_free_heap()
            self.base = rss_bytes()
        self._arm()

    def _arm(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif not _reset_peak_rss():
            self._sampler = _Sampler()

    def mark(self, stage: str) -> None:
        """Close `stage`: record its peak and start the next stage's."""
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self._sampler is not None:
            peak = self._sampler.stop()
            self._sampler = None
        else:
            peak = _read_status_kb("VmHWM") or rss_bytes()
        self.stages[stage] = max(0, peak - self.base)
        self._arm()

    def finish(self) -> dict[str, int]:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        out = dict(self.stages)
        out["pass"] = max(self.stages.values(), default=0)
        return out


# ---- machine ------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD features that decide CPU matmul speed (AVX-512, bf16, AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))
    except OSError:
        pass
    return []


def machine_info(device: torch.device | str) -> dict:
    import transformers

    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def matmul_probe(device: torch.device | str, dtypes: Sequence[torch.dtype], seconds: float = 0.5) -> dict:
    """GFLOP/s of a [600, 4096] x [4096, 11008] product (a 7B FFN matmul at prefill length) per dtype."""
    out = {}
    for dtype in dtypes:
        a = torch.randn(600, 4096, device=device).to(dtype)
        w = torch.randn(11008, 4096, device=device).to(dtype)
        clock = Clock(device)
        torch.nn.functional.linear(a, w)
        times = []
        end = clock.now() + seconds
        while clock.now() < end or len(times) < 2:
            t0 = clock.now()
            torch.nn.functional.linear(a, w)
            times.append(clock.now() - t0)
        out[str(dtype).replace("torch.", "")] = round(2 * 600 * 4096 * 11008 / float(np.median(times)) / 1e9, 1)
    return out
