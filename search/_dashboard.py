"""``thaw dashboard``: optuna-dashboard on a study's storage, with thaw's artifact folder.

Binds 127.0.0.1 unless told otherwise (the dashboard has no login and can edit the study),
prints the URL of the study's page and serves until Ctrl-C, which stops it cleanly (exit 0).

The artifact folder defaults to :func:`search._publish.default_artifact_dir`: beside the
SQLite file, or ``<study file folder>/artifacts`` for PostgreSQL, where it must be a folder
that every worker and the dashboard reach (see ``docs/dashboard.md``).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import socket
import socketserver
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

_logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
_PORT_SEARCH = 50


class DashboardError(RuntimeError):
    """The dashboard cannot start. The message is one line."""


class PortInUseError(DashboardError):
    """The port is taken; ``free_port`` is one that was free when checked (or ``None``)."""

    def __init__(self, message: str, free_port: int | None) -> None:
        super().__init__(message)
        self.free_port = free_port


# ----------------------------------------------------------------------------------- ports


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise DashboardError(f"cannot listen on host {host!r}: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _can_bind(family: socket.AddressFamily, sockaddr: tuple[Any, ...]) -> OSError | None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the server does (allow_reuse_address): a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
            sock.listen(1)
        except OSError as exc:
            return exc
    return None


def find_free_port(host: str = DEFAULT_HOST, start: int = DEFAULT_PORT) -> int | None:
    """The first free port after ``start`` (up to 50 on), else any free port the system
    gives, else ``None``."""
    family, sockaddr = _address(host, start)
    for candidate in range(start + 1, min(start + 1 + _PORT_SEARCH, 65536)):
        if _can_bind(family, (sockaddr[0], candidate, *sockaddr[2:])) is None:
            return candidate
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((sockaddr[0], 0, *sockaddr[2:]))
        except OSError:
            return None
        return int(sock.getsockname()[1])


def _bind_error(host: str, port: int, exc: OSError) -> DashboardError:
    if exc.errno == errno.EADDRINUSE:
        free = find_free_port(host, port)
        hint = f"; try --port {free}" if free is not None else ""
        return PortInUseError(
            f"port {port} on {host} is already in use (another dashboard?){hint}", free
        )
    if exc.errno == errno.EACCES:
        return DashboardError(
            f"no permission to listen on {host}:{port} (ports below 1024 need root); "
            "use --port 8080 or another above 1023"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return DashboardError(
            f"cannot listen on {host}:{port}: {host} is not an address of this machine; "
            f"use --host {DEFAULT_HOST}"
        )
    return DashboardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUseError` (naming a free port) when ``host:port`` is taken, or
    :class:`DashboardError` when it cannot be used at all. Port 0 means any free port."""
    if not 0 <= port <= 65535:
        raise DashboardError(f"--port must be between 0 and 65535, got {port}")
    family, sockaddr = _address(host, port)
    error = _can_bind(family, sockaddr)
    if error is not None:
        raise _bind_error(host, port, error)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard_url(host: str, port: int, study_id: int | None = None) -> str:
    """``http://host:port/dashboard/studies/<id>``; all-interface hosts show as 127.0.0.1."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    if ":" in shown:
        shown = f"[{shown}]"
    path = "/dashboard" if study_id is None else f"/dashboard/studies/{study_id}"
    return f"http://{shown}:{port}{path}"


# ---------------------------------------------------------------------------------- server


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        _logger.debug("%s - %s", self.address_string(), format % args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C does not wait for open browser connections

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name (socket.getfqdn), which
        # can hang for seconds on a machine without a resolver; the name is not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that closes a connection mid-response is not worth a traceback.
        _logger.debug("Error serving %s", client_address, exc_info=True)


def make_dashboard_server(
    storage_url: str, artifact_dir: Path | str | None, host: str = DEFAULT_HOST, port: int = 0
) -> tuple[_Server, Any]:
    """Open the storage, build optuna-dashboard's WSGI app and bind ``host:port``.

    Returns ``(server, storage)``; call ``server.serve_forever()`` and, when done,
    ``server.server_close()``.

    Raises:
        DashboardError: one line, when the storage cannot be opened, the artifact folder
            cannot be created or the port cannot be bound (:class:`PortInUseError`).
    """
    import optuna
    from optuna_dashboard import wsgi

    from thaw.search._publish import PublishError, open_artifact_store
    from thaw.search._study import StorageError, open_storage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = open_storage(storage_url, must_exist=True)
    except StorageError as exc:
        raise DashboardError(str(exc)) from None
    store = None
    if artifact_dir is not None:
        try:
            store = open_artifact_store(artifact_dir)
        except PublishError as exc:
            raise DashboardError(str(exc)) from None
    app = wsgi(storage, artifact_store=store)
    family, sockaddr = _address(host, port)
    server_class: type[_Server] = type("_DashboardServer", (_Server,), {"address_family": family})
    try:
        server: _Server = make_server(
            sockaddr[0], sockaddr[1], app, server_class=server_class, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise _bind_error(host, port, exc) from None
    return server, storage


def serve_dashboard(
    storage_url: str,
    artifact_dir: Path | str | None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    study_name: str | None = None,
    *,
    on_ready: Callable[[str, int | None], None] | None = None,
) -> None:
    """Serve optuna-dashboard on ``storage_url`` until Ctrl-C; return normally then.

    ``on_ready(url, study_id)`` is called once the port is bound, with the URL of the study's
    page (of the study list when ``study_name`` is not in the storage yet). ``port=0``
    picks a free port.

    Raises:
        DashboardError: one line; see :func:`make_dashboard_server`.
    """
    server, storage = make_dashboard_server(storage_url, artifact_dir, host, port)
    try:
        study_id: int | None = None
        if study_name is not None:
            try:
                study_id = storage.get_study_id_from_name(study_name)
            except KeyError:
                study_id = None
        bound_port = int(server.server_address[1])
        if on_ready is not None:
            on_ready(dashboard_url(host, bound_port, study_id), study_id)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            _logger.info("Dashboard stopped by Ctrl-C")
    finally:
        server.server_close()
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()


# --------------------------------------------------------------------------------- command


def add_dashboard_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``thaw dashboard`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard",
        help="review trials in optuna-dashboard (curves, verdicts, diagnosis)",
        description=(
            "Start optuna-dashboard on the study's storage with thaw's artifact folder and "
            "print the URL of the study's page. Ctrl-C stops it."
        ),
    )
    parser.add_argument("study_file", help="study file, e.g. studies/demo.yaml")
    parser.add_argument("--storage", help="Optuna storage URL (overrides the study file)")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    parser.add_argument(
        "--artifact-dir",
        help="artifact folder (default: 'artifacts' beside the SQLite file, else beside the "
        "study file; with PostgreSQL use a folder every worker reaches)",
    )
    parser.set_defaults(func=cmd_dashboard)
    return parser


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``thaw dashboard STUDY_FILE``: serve until Ctrl-C; exit status 0 then."""
    from thaw.search._cli import UserError, _load_config
    from thaw.search._config import mask_url
    from thaw.search._publish import study_artifact_dir

    config = _load_config(args.study_file, args.storage)
    url = str(config.storage)
    host = str(args.host)
    try:
        check_port(host, int(args.port))
    except DashboardError as exc:
        raise UserError(str(exc)) from None
    artifact_dir = (
        Path(args.artifact_dir).resolve()
        if getattr(args, "artifact_dir", None)
        else study_artifact_dir(url, Path(config.path).resolve().parent, config.artifacts)
    )
    if not is_loopback(host):
        print(
            f"thaw: warning: listening on {host}: the dashboard has no login, anyone who "
            "reaches this port can read and edit the study",
            file=sys.stderr,
        )

    def ready(page: str, study_id: int | None) -> None:
        if study_id is None:
            print(
                f"Study {config.name!r} is not in {mask_url(url)} yet; it appears in the list "
                "once 'thaw run' creates it."
            )
        print(
            f"Dashboard for study {config.name!r} ({mask_url(url)}, artifacts in {artifact_dir}):"
        )
        print(f"  {page}")
        print("Press Ctrl-C to stop.", flush=True)

    try:
        serve_dashboard(url, artifact_dir, host, int(args.port), config.name, on_ready=ready)
    except DashboardError as exc:
        raise UserError(str(exc)) from None
    print("Dashboard stopped.", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m search._dashboard STUDY_FILE ...``: the same as ``thaw dashboard``."""
    from thaw.search._cli import EXIT_INTERRUPTED, OneLineParser, UserError, _fail

    parser = OneLineParser(prog="thaw")
    add_dashboard_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboard", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return cmd_dashboard(args)
    except UserError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
