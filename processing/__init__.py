"""Sans-I/O signal processing: RR intervals in, typed HRV results out (numpy/scipy only)."""

from processing.timedomain import RollingTimeDomain, TimeDomain, time_domain

__all__ = [
    "RollingTimeDomain",
    "TimeDomain",
    "time_domain",
]
