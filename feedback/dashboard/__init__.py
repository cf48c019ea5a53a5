"""The dashboard: live biofeedback page, session control, pairing and history, served over
HTTP by the daemon (see docs/dashboard.md)."""

from feedback.dashboard.auth import is_loopback, load_or_create_token
from feedback.dashboard.hub import Hub
from feedback.dashboard.server import (
    Control,
    Dashboard,
    DashboardConfig,
    DashboardError,
    DeviceView,
    NoDaemon,
)

__all__ = [
    "Control",
    "Dashboard",
    "DashboardConfig",
    "DashboardError",
    "DeviceView",
    "Hub",
    "NoDaemon",
    "is_loopback",
    "load_or_create_token",
]
