"""Peak memory of one stretch of code in this process (shared by the benchmarks).

`ru_maxrss` is the peak of the process's whole life and cannot be reset, so a figure based on
it includes whatever came before (loading the data, importing torch). Linux resets the peak
counter (VmHWM) when 5 is written to /proc/self/clear_refs (Linux ≥ 4.0): reset right before
the code, read right after.
"""

from __future__ import annotations


def _status_mib(field: str) -> float:
    """A memory line of /proc/self/status (`VmRSS`, `VmHWM`) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}: peak memory needs Linux")


def reset_peak_rss() -> float:
    """Reset this process's peak RSS counter to its current RSS; return that RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    """The peak RSS since the last `reset_peak_rss`, in MiB."""
    return _status_mib("VmHWM")
