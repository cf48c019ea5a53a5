"""Sans-I/O signal processing: RR intervals in, typed HRV results out (numpy/scipy only)."""

from processing.settling import SettlingIndex, SettlingSnapshot, SettlingState
from processing.timedomain import RollingTimeDomain, TimeDomain, time_domain

__all__ = [
    "RollingTimeDomain",
    "SettlingIndex",
    "SettlingSnapshot",
    "SettlingState",
    "TimeDomain",
    "time_domain",
]
