"""The process: listen at once, load the model beside the loop, become ready, drain on SIGTERM, exit.

Liveness answers while the model loads; readiness only once it loaded, matched its digest and passed
its self-test. A model that cannot be served exits 2 with the reason in the termination log (the runtime
contract, docs/contracts.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from kubeloop.contract import EXIT_DATA_ERROR, EXIT_OK

from .app import App
from .config import ServeConfig
from .connection import Connection
from .events import log
from .model import Model, ModelLoadError

# Descriptors beside the client connections: the listener, the event loop's, stdio, the model's files while
# it loads, the token file when it is re-read.
SPARE_FILES = 64


def raise_open_file_limit(wanted: int) -> int:
    """Raise the soft limit on open files toward ``wanted``, up to the hard limit, as Go programs do at
    start: containers often get a soft limit of 1024 under a far higher hard one. The soft limit after
    (``sys.maxsize``: none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    if soft >= wanted:
        return soft
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        return soft
    return new


def report_failure(config: ServeConfig, error: ModelLoadError) -> None:
    """A JSON result in the termination log and on the last line of stdout."""
    result = json.dumps({"ok": False, "reason": error.reason, "message": error.message})
    with contextlib.suppress(OSError):
        config.termination_log.write_text(result)
    print(result, flush=True)


async def serve(config: ServeConfig) -> int:
    """Listen, load, serve until SIGTERM (or SIGINT), drain; 0 after a drain, 2 if the model failed."""
    loop = asyncio.get_running_loop()
    wanted = config.max_connections + SPARE_FILES
    open_files = raise_open_file_limit(wanted)
    if open_files < wanted:  # beyond it, accept() fails instead of answering 503
        log("open_file_limit_low", limit=open_files, max_connections=config.max_connections, wanted=wanted)
    app = App(config)
    server = await loop.create_server(
        lambda: Connection(app), config.host, config.port, backlog=2048, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log("listening", host=config.host, port=port, pid=os.getpid())

    load = loop.run_in_executor(
        None,
        lambda: Model(
            config.model_dir, config.expected_sha256, config.ort_threads or None, config.model_name
        ),
    )
    stopped = asyncio.ensure_future(stop.wait())
    # asyncio.wait takes futures of different result types only as Future[Any] (Future is invariant).
    waiters: list[asyncio.Future[Any]] = [load, stopped]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if load.done():
        try:
            model = load.result()
        except ModelLoadError as e:
            report_failure(config, e)
            server.close()
            return EXIT_DATA_ERROR
        app.set_model(model)
        # The model's objects live as long as the process: keep the cyclic GC from walking them again.
        gc.freeze()
        log(
            "ready",
            model=model.name,
            version=model.version,
            sha256=model.sha256,
            cpus=model.cpus,
            ort_threads=model.session.get_session_options().intra_op_num_threads,
            batching=config.batching,
            max_batch_rows=config.max_batch_rows,
            auth=config.auth_token_file is not None,
            metrics_auth=config.metrics_auth,
            max_connections=config.max_connections,
            open_file_limit=open_files,
        )
    await stopped
    await drain(app, server, config)
    return EXIT_OK


async def drain(app: App, server: asyncio.AbstractServer, config: ServeConfig) -> None:
    """Not ready first (endpoints are removed), then stop accepting, finish what is in flight, exit.

    The endpoint's removal reaches each node's proxy rules at its own pace (seconds on a busy node), and a
    connection that arrives after the listener closed is refused. So the listener stays open for at least
    ``drain_delay`` and then until no connection has arrived for ``drain_quiet`` seconds: traffic that still
    arrives says the Service still routes here. ``drain_timeout`` bounds the rest of the drain.
    """
    app.draining = True
    app.last_accept = start = time.monotonic()
    if app.metrics is not None:
        app.metrics.ready = False
    log("draining", connections=len(app.connections), delay=config.drain_delay, quiet=config.drain_quiet)
    deadline = start + config.drain_delay + config.drain_timeout
    if config.drain_delay:
        await asyncio.sleep(config.drain_delay)
    while time.monotonic() - app.last_accept < config.drain_quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    server.close()
    log(
        "listener_closed",
        after_seconds=round(time.monotonic() - start, 3),
        accepted_while_draining=app.accepted_while_draining,
    )
    while app.connections and time.monotonic() < deadline:
        for conn in list(app.connections):
            conn.close_if_idle()  # busy ones close themselves after their answer (draining => no keep-alive)
        await asyncio.sleep(0.01)
    log("stopped", unfinished_connections=len(app.connections))


def run(config: ServeConfig) -> int:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the server extra; the stdlib loop still works
        log("uvloop_missing", detail="falling back to the asyncio event loop (slower)")
    with asyncio.Runner(loop_factory=factory) as runner:
        code = runner.run(serve(config))
    sys.stdout.flush()
    return code
