"""Tell systemd how the service is doing: the sd_notify(3) protocol, standard library only.

systemd (Type=notify) hands the service a datagram socket in `$NOTIFY_SOCKET`, a file path or
`@name` for the abstract namespace, and waits for `READY=1` before it counts the unit as
started. With `WatchdogSec=` it also sets `$WATCHDOG_USEC` and kills a service that sends no
`WATCHDOG=1` within that time. Without `$NOTIFY_SOCKET` (not under systemd) every call is a
no-op, so the daemon runs the same from a shell or a test.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to one socket (or nowhere) and paces the watchdog pings."""

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        # Ping at half the watchdog timeout, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s = None if not watchdog_usec else watchdog_usec / 2e6
        self._clock = clock
        self._last_ping: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """The notifier systemd asked for in the environment (a no-op one outside systemd).

        `$WATCHDOG_USEC` counts only when `$WATCHDOG_PID` is unset or names this process.
        """
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            logger.warning("NOTIFY_SOCKET=%r: not a path or @name; not notifying systemd", address)
            address = None
        usec: int | None = None
        watchdog_pid = env.get("WATCHDOG_PID", "")
        if watchdog_pid in ("", str(pid)):
            raw = env.get("WATCHDOG_USEC", "")
            try:
                usec = int(raw) if raw else None
            except ValueError:
                logger.warning("WATCHDOG_USEC=%r: not an integer; no watchdog pings", raw)
            if usec is not None and usec <= 0:
                usec = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        """True when running under a systemd that listens for notifications."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send `fields` (e.g. "READY=1") as one datagram; False when not sent.

        A failed send is logged, not raised: the daemon's work matters more than its report,
        and a watchdog that stops hearing from it restarts it anyway.
        """
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            logger.warning("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self) -> bool:
        """The service is up: systemd finishes `systemctl start` and starts dependants."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """The service has begun to shut down."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Send WATCHDOG=1 when half the watchdog timeout has passed since the last ping.

        Call it from every turn of the main loop; between pings it does nothing.
        """
        if self.watchdog_interval_s is None or self.address is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")
