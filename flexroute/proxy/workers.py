"""``flexroute serve --workers N``: N processes on one port, each with its own engine.

The parent binds the socket once and runs uvicorn's supervisor (``uvicorn.supervisors.
Multiprocess``); every worker is a fresh ``spawn``ed interpreter that builds its app with
:func:`create_worker_app` (an app factory, so each process has its own runtime from
:func:`flexroute.runtime.build_runtime`: engine, pools, ledger writer, limiter, billing gate).
The kernel hands each accepted connection to one of the workers blocked on the shared socket.

Lifecycle (the choice made here):

* SIGTERM/SIGINT to the parent terminates every worker; each drains its in-flight requests for
  at most ``FLEXROUTE_DRAIN_TIMEOUT`` and flushes its ledger; the parent then exits 0.
* A worker that dies while serving is logged ("Child process [pid] died") and **restarted**.
* A worker that fails before serving (bad settings, an unreachable store at start-up) stops the
  parent, which exits 1: a restart would fail the same way.
* A parent that dies without stopping them (SIGKILL, OOM killer) takes its workers along: on
  Linux each asks for SIGTERM at its parent's death (``PR_SET_PDEATHSIG``) and drains.

How many: ``--workers N``, else ``FLEXROUTE_WORKERS``, else one per CPU — except gateway mode
without Redis, which runs one (see :func:`worker_count`); ``1`` serves in the ``serve``
process itself, with no supervisor.

State shared between workers:

* Rate limits are per flexroute key per minute. In-process counters would let N workers grant
  N × the limit, so gateway mode with ``--workers`` > 1 needs ``FLEXROUTE_REDIS_URL``
  (:func:`check_shared_state` refuses otherwise, in one line).
* The billing gate re-reads an organisation's state (one indexed row) after
  ``FLEXROUTE_BILLING_GATE_TTL`` seconds (default 0.05), so a ``flexroute billing mark-paid``
  or a Stripe webhook handled by another process lifts a pause within ~50 ms.
* The SQLite ledger is opened by each worker in WAL mode with a bounded busy wait
  (``busy_timeout``); PostgreSQL takes concurrent writers as it is.
* Metrics: the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory (a temporary
  one unless the operator set it) before spawning, so every worker's counters and histograms
  go to files there and any worker's ``GET /metrics`` shows the sum of all of them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile

from flexroute.config import Settings
from flexroute.errors import ConfigError
from flexroute.proxy.app import ProxyApp

# How the parent tells the spawned workers its command-line logging choices.
_LOG_FORMAT = "_FLEXROUTE_WORKER_LOG_FORMAT"
_LOG_LEVEL = "_FLEXROUTE_WORKER_LOG_LEVEL"
_PARENT = "_FLEXROUTE_WORKER_PARENT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's cpuset, taskset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(requested: int | None, settings: Settings, *, gateway: bool) -> tuple[int, str]:
    """How many workers to run and, when it is not what was asked, why.

    ``requested`` is ``--workers`` (``None``: ``FLEXROUTE_WORKERS``, else the default). The
    default is one worker per CPU (:func:`available_cpus`) in sidecar mode, which shares no
    state but the ledger. Gateway mode defaults to one worker, said in the start line: without
    Redis, in-process rate limits are exact only in one process (refusing to start would break
    ``flexroute serve`` out of the box); with Redis, tests/test_limits.py's 1,000-request burst
    (limit 100) on a 2-core machine at load ~10 admitted 156-377 with three replicas of two
    workers and 300-338 with three single-process ones: the limiter's fail-over to
    per-process limits (:mod:`flexroute.limits.redis`) takes pool waits and slow replies for
    an outage, and more processes make that likelier. So more gateway workers stay the
    operator's choice (``--workers N`` with ``FLEXROUTE_REDIS_URL``) until that is fixed.
    """
    workers = requested if requested is not None else settings.workers
    if workers is None:
        cpus = available_cpus()
        if gateway and cpus > 1:
            fix = "choose --workers N" if settings.redis_url else "set FLEXROUTE_REDIS_URL"
            return 1, (
                f"not {cpus}, one per CPU, as in sidecar mode: gateway rate limits are exact "
                f"in one process; {fix} for more"
            )
        return cpus, ""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    check_shared_state(settings, workers, gateway=gateway)
    return workers, ""


def check_shared_state(settings: Settings, workers: int, *, gateway: bool) -> None:
    """Refuse a worker count whose state would silently not be shared."""
    if workers > 1 and gateway and settings.redis_url is None:
        raise ConfigError(
            f"--workers {workers} in gateway mode needs FLEXROUTE_REDIS_URL: in-process rate "
            f"limits would grant {workers} × each key's limit. Set FLEXROUTE_REDIS_URL "
            "(redis://host:6379/0) or use --workers 1."
        )


def serve_workers(
    settings: Settings, *, host: str, port: int, workers: int, log_format: str, log_level: str
) -> int:
    """Run ``workers`` processes on ``host:port`` until SIGTERM; the exit status."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from flexroute.proxy.slow_clients import server_config

    os.environ[_LOG_FORMAT] = log_format
    os.environ[_LOG_LEVEL] = log_level
    os.environ[_PARENT] = str(os.getpid())
    config = server_config(
        "flexroute.proxy.workers:create_worker_app", settings, factory=True, workers=workers,
        host=host, port=port, log_level=log_level, access_log=False,
        log_config=None,  # each worker configures flexroute's handler in the factory
        lifespan="on", timeout_worker_healthcheck=30,  # a loaded box answers pings late
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout),
    )  # fmt: skip
    from flexroute import metrics

    # before any worker starts: each one's metrics go to files all of them aggregate
    metrics.prepare_multiprocess(
        os.environ.get(metrics.MULTIPROC_ENV) or tempfile.mkdtemp(prefix="flexroute-metrics-")
    )
    sock = config.bind_socket()
    supervisor = Multiprocess(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        sock.close()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        logging.getLogger("flexroute").error("a worker failed to start; stopping")
        return 1
    return 0


def create_worker_app() -> ProxyApp:
    """The app factory each worker process calls: settings from the environment (and
    ``FLEXROUTE_CONFIG``), logging as the parent's command line asked."""
    from flexroute.config_file import load_settings
    from flexroute.logs import configure
    from flexroute.proxy import create_app

    _die_with_parent(int(os.environ.get(_PARENT, "0")))
    configure(os.environ.get(_LOG_FORMAT, "json"), os.environ.get(_LOG_LEVEL, "info"))
    settings = load_settings()
    return create_app(settings, gate_ttl=settings.billing_gate_ttl)


def _die_with_parent(parent: int) -> None:
    """Linux: this worker gets SIGTERM (and drains) when the supervisor dies, even by SIGKILL,
    rather than serving on as an orphan nobody restarts or stops."""
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
