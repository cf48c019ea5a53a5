"""The dashboard's access token: required for every page and command when the server is bound
to anything other than loopback. Kept in a file of mode 0600 (created on first use)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from settle.errors import ConfigError

__all__ = ["is_loopback", "load_or_create_token"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


MIN_TOKEN_CHARS = 16
"""The shortest token a token file may hold (the generated ones have 32 characters)."""
MAX_TOKEN_CHARS = 512
"""The longest (a browser sends it in a header; the page checks the same range)."""


def load_or_create_token(path: Path) -> str:
    """The token stored in ``path``; a new random one (written 0600) when there is none."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise ConfigError("http.token_file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("http.token_file", f"{path} is not UTF-8 text") from None
    if token:
        if path.stat().st_mode & 0o077:
            raise ConfigError("http.token_file", f"{path} is readable by others (chmod 600 it)")
        if len(token) < MIN_TOKEN_CHARS:
            # A one-letter token "protected" the dashboard of everyone on the network.
            raise ConfigError(
                "http.token_file",
                f"{path} holds a token of {len(token)} characters; use at least "
                f"{MIN_TOKEN_CHARS} (or delete the file and a random one is made)",
            )
        if len(token) > MAX_TOKEN_CHARS or not all("!" <= c <= "~" for c in token):
            # The page sends it in an Authorization header, which takes printable ASCII
            # only: a token with "é" or a space could never be used from a browser.
            raise ConfigError(
                "http.token_file",
                f"{path} holds a token the browser cannot send: use at most {MAX_TOKEN_CHARS} "
                "letters, digits and punctuation, no spaces (or delete the file and a random "
                "one is made)",
            )
        return token
    token = secrets.token_urlsafe(24)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.chmod(path, 0o600)
    except OSError as exc:
        raise ConfigError("http.token_file", f"cannot write {path}: {exc.strerror}") from None
    return token
