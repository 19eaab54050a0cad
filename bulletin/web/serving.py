"""Running one of our ASGI apps under uvicorn: bound up front, then served in this thread, in a
background thread (tests), or as several worker processes sharing the listening socket.

uvicorn's HTTP/1.1 protocol gives a keep-alive connection a time-out between requests, but none
for a connection's first request: a client trickling header bytes would hold a connection for
ever. `GuardedH11Protocol` closes a connection whose first request has not arrived in
HEADER_TIMEOUT seconds (issue 12, finding 3). Bodies have their own deadline in the apps.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bulletin.errors import ConfigError

HEADER_TIMEOUT = 10.0  # seconds for a new connection's request line and headers
KEEP_ALIVE = 5  # seconds an idle keep-alive connection is kept
MAX_IN_FLIGHT = 200  # connections at once; beyond it uvicorn answers 503 at once


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for the first request's headers."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._first_request = self.loop.call_later(HEADER_TIMEOUT, self._no_request_yet)

    def _no_request_yet(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._first_request.cancel()
        super().connection_lost(exc)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ConfigError naming the address and what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(256)
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); is another "
            "bulletin server running? Pick another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def config(app: Any, **options: Any) -> uvicorn.Config:
    """uvicorn settings shared by every bulletin server: quiet, guarded, capped."""
    defaults: dict[str, Any] = {
        "http": GuardedH11Protocol,
        "lifespan": "off",
        "access_log": False,  # the apps log their own lines, without tokens or escapes
        "log_config": None,
        "log_level": "warning",
        "server_header": False,
        "limit_concurrency": MAX_IN_FLIGHT,
        "timeout_keep_alive": KEEP_ALIVE,
        "timeout_graceful_shutdown": 30,
    }
    return uvicorn.Config(app, **{**defaults, **options})


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app it is stopping before it waits for open requests.

    Open streams (the preview's server-sent events) end then, instead of holding the
    graceful shutdown until it times out.
    """

    before_shutdown: tuple = ()

    async def shutdown(self, sockets=None) -> None:
        for hook in self.before_shutdown:
            hook()
        await super().shutdown(sockets)


class WebServer:
    """A bound uvicorn server: `serve_forever()` here, or `start()` in a thread (tests)."""

    def __init__(
        self, app: Any, host: str, port: int, *, before_shutdown=(), **options: Any
    ) -> None:
        self.app = app
        self.socket = bind(host, port)
        self.server_address = self.socket.getsockname()[:2]
        self.server = _Server(config(app, **options))
        self.server.before_shutdown = tuple(before_shutdown)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def serve_forever(self, poll_interval: float | None = None) -> None:
        """Serve until shutdown() or, in the main thread, Ctrl-C / SIGTERM (then exit cleanly)."""
        main = threading.current_thread() is threading.main_thread()
        # uvicorn re-raises the signal that stopped it once it has finished; with these
        # handlers that ends here, after in-flight requests are answered, not as a kill.
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if main else None
        try:
            self.server.run(sockets=[self.socket])
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def start(self, timeout: float = 15.0) -> WebServer:
        """Serve in a daemon thread; returns once it accepts connections."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def shutdown(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=35)

    def server_close(self) -> None:
        self.socket.close()
        close = getattr(self.app, "close", None)
        if close is not None:
            close()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve_workers(app_path: str, sock: socket.socket, workers: int, **options: Any) -> None:
    """N worker processes (spawned, each importing `app_path`, a factory) on one socket."""
    from uvicorn.supervisors import Multiprocess

    settings = config(app_path, factory=True, workers=workers, **options)
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(settings, sockets=[sock]).run()
    sock.close()
