"""The ``flexroute`` command: serve, emulate, demo, batch, prices, requests."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from flexroute import __version__
from flexroute.config_file import redact_url
from flexroute.errors import ConfigError, FlexrouteError

if TYPE_CHECKING:
    from uvicorn import Server


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    config = getattr(args, "config_file", None) or args.config
    if config:  # every command (and worker process) reads its settings through it
        os.environ["FLEXROUTE_CONFIG"] = config
    try:
        result: int = args.run(args)
    except FlexrouteError as error:
        print(f"flexroute: {error}", file=sys.stderr)
        return 2
    return result


_CONFIG_HELP = (
    "a TOML file of settings (env: FLEXROUTE_CONFIG; default: none); the environment wins over it"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexroute", description=__doc__)
    parser.add_argument("--version", action="version", version=f"flexroute {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=_CONFIG_HELP,
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the sidecar proxy")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    serve.add_argument("--config", metavar="FILE", dest="config_file", help=_CONFIG_HELP)
    serve.add_argument(
        "--log-format", choices=("json", "text"), default="json",
        help="one JSON object per line (json, the default) or text for a terminal; "
        "uvicorn's lines too",
    )  # fmt: skip
    serve.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"),
        help="info (default) logs one line per request",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="processes sharing the port (env: FLEXROUTE_WORKERS; default: one per CPU in "
        "sidecar mode, 1 in gateway mode, whose rate limits are exact in one process); 1 serves "
        "in this process; more than 1 in gateway mode needs FLEXROUTE_REDIS_URL",
    )  # fmt: skip
    serve.set_defaults(run=_serve)

    config = commands.add_parser("config", help="the effective settings")
    config_actions = config.add_subparsers(required=True, metavar="ACTION")
    check = config_actions.add_parser(
        "check", help="print the effective settings (secrets masked); exit 1 on a problem"
    )
    check.add_argument("--config", metavar="FILE", dest="config_file", help=_CONFIG_HELP)
    check.set_defaults(run=_config_check)

    emulate = commands.add_parser("emulate", help="run the provider emulator on loopback")
    emulate.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    emulate.add_argument("--port", type=int, default=8090, help="port to listen on (8090)")
    emulate.add_argument("--seed", type=int, default=0, help="capacity model's seed (0)")
    emulate.add_argument(
        "--weather", type=int, default=None, metavar="SEED",
        help="flex capacity follows a seeded Markov process over time (calm, degraded, outage, "
        "recovery; one per model) instead of a fixed refusal rate (default: off)",
    )  # fmt: skip
    emulate.add_argument(
        "--climate", default="outage", choices=["calm", "outage"],
        help="the weather's rates: rare outages (calm) or waves of them (outage, the default)",
    )  # fmt: skip
    emulate.add_argument(
        "--weather-speed", type=float, default=1.0, metavar="X",
        help="weather seconds per wall-clock second (default 1.0)",
    )  # fmt: skip
    emulate.add_argument(
        "--weather-start", type=float, default=0.0, metavar="SECONDS",
        help="where in the weather to begin, in seconds (default 0.0: calm)",
    )  # fmt: skip
    emulate.set_defaults(run=_emulate)

    demo = commands.add_parser("demo", help="emulator + proxy + a mixed workload, no keys needed")
    demo.add_argument(
        "--database-url",
        help="ledger for the demo's records (default: a scratch file, deleted at exit; never "
        "FLEXROUTE_DATABASE_URL)",
    )
    demo.add_argument(
        "--weather", action="store_true",
        help="add a few seconds of flex weather: calm, an outage and the recovery",
    )  # fmt: skip
    demo.set_defaults(run=_demo)

    prices = commands.add_parser("prices", help="print the price catalog")
    prices.set_defaults(run=_prices)
    price_actions = prices.add_subparsers(metavar="ACTION")
    check = price_actions.add_parser("check", help="compare the catalog with genai-prices")
    check.add_argument("--catalog", metavar="DIR", help="a catalog directory (default: shipped)")
    check.add_argument("--at", metavar="ISO-DATE", help="the moment to compare prices at (UTC)")
    check.set_defaults(run=_prices_check)

    from flexroute.commands import batch, flex_status

    batch.add_parser(commands)
    flex_status.add_parser(commands)

    request = commands.add_parser("request", help="print one ledger record as JSON")
    request.add_argument("request_id", help="the x-flexroute-request-id of a response")
    request.set_defaults(run=_request)
    _ledger_commands(commands)
    return parser


def _ledger_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    billing = commands.add_parser("billing", help="monthly charges and past-due state")
    actions = billing.add_subparsers(required=True, metavar="ACTION")
    run = actions.add_parser("run", help="charge every org owing the threshold, once a month")
    run.add_argument("--at", metavar="ISO-DATE", help="a moment in the month to bill (UTC)")
    run.set_defaults(run=lambda a: _async("billing", "run", a.at))
    paid = actions.add_parser("mark-paid", help="an org's unsettled charges were paid")
    paid.add_argument("org", help="the organisation id")
    paid.set_defaults(run=lambda a: _async("billing", "paid", a.org))
    failed = actions.add_parser("mark-failed", help="an org's charge failed: past-due")
    failed.add_argument("org", help="the organisation id")
    failed.add_argument("--reason", required=True, help="what failed, shown in its 402s")
    failed.set_defaults(run=lambda a: _async("billing", "failed", a.org, a.reason))

    orgs = commands.add_parser("orgs", help="organisations' billing state")
    org_actions = orgs.add_subparsers(required=True, metavar="ACTION")
    show = org_actions.add_parser("show", help="balance, state, reason, last invoice")
    show.add_argument("org", help="the organisation id")
    show.add_argument("--json", action="store_true", help="JSON instead of a table")
    show.set_defaults(run=lambda a: _async("orgs", "show", a.org, a.json))
    caps = org_actions.add_parser("caps", help="show or set monthly caps on fees and spend")
    caps.add_argument("org", help="the organisation id")
    caps.add_argument("--key", metavar="KEY_ID", help="the key's own caps (default: the org's)")
    caps.add_argument("--fee-cap", metavar="USD", help="monthly cap on fees; 'none' removes it")
    caps.add_argument("--spend-cap", metavar="USD", help="monthly cap on provider spend; 'none'")
    caps.set_defaults(run=lambda a: _async("orgs", "caps", a.org, a.key, a.fee_cap, a.spend_cap))

    usage = commands.add_parser("usage", help="requests, spend, savings, fees by day/model/route")
    usage.add_argument("--org", help="one organisation (default: all)")
    usage.add_argument("--since", metavar="DATE", help="from this day (UTC; default: all)")
    usage.add_argument("--json", action="store_true", help="JSON instead of a table")
    usage.set_defaults(run=lambda a: _async("usage", "show", a.org, a.since, a.json))

    _access_commands(commands)

    db = commands.add_parser("db", help="the ledger database")
    db_actions = db.add_subparsers(required=True, metavar="ACTION")
    upgrade = db_actions.add_parser("upgrade", help="apply pending schema migrations")
    upgrade.set_defaults(run=lambda a: _async("db", "upgrade"))


def _access_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="flexroute keys for organisations (gateway mode)")
    key_actions = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_actions.add_parser("create", help="print a new key once (only a hash is kept)")
    create.add_argument("--org", required=True, help="the organisation the key acts for")
    create.add_argument(
        "--tier", default="free", choices=["free", "elevated", "paid"],
        help="its rate-limit tier (free; limits: FLEXROUTE_RATE_LIMITS)",
    )  # fmt: skip
    create.set_defaults(run=lambda a: _async("keys", "create", a.org, a.tier))
    listing = key_actions.add_parser("list", help="key ids, orgs, tiers; never the keys")
    listing.add_argument("--org", help="one organisation's keys (default: all)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(run=lambda a: _async("keys", "list_", a.org, a.json))
    revoke = key_actions.add_parser("revoke", help="stop accepting a key")
    revoke.add_argument("key_id", help="the key's id, from `flexroute keys list`")
    revoke.set_defaults(run=lambda a: _async("keys", "revoke", a.key_id))

    providers = commands.add_parser("providers", help="organisations' own provider keys")
    provider_actions = providers.add_subparsers(required=True, metavar="ACTION")
    put = provider_actions.add_parser("set", help="store a provider key read from stdin")
    put.add_argument("org", help="the organisation id")
    put.add_argument("provider", choices=["openai", "gemini", "anthropic"], help="whose key")
    put.set_defaults(run=lambda a: _async("providers", "set_", a.org, a.provider))
    show = provider_actions.add_parser("list", help="providers and fingerprints of an org")
    show.add_argument("org", help="the organisation id")
    show.add_argument("--json", action="store_true", help="JSON instead of a table")
    show.set_defaults(run=lambda a: _async("providers", "list_", a.org, a.json))
    rotate = provider_actions.add_parser("rotate", help="re-seal with FLEXROUTE_SECRET_KEY")
    rotate.set_defaults(run=lambda a: _async("providers", "rotate"))


def _async(module: str, name: str, *args: object) -> int:
    """Run ``flexroute.commands.<module>.<name>(*args)`` to completion."""
    import importlib

    import anyio

    command = getattr(importlib.import_module(f"flexroute.commands.{module}"), name)
    result: int = anyio.run(command, *args)
    return result


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    import anyio
    import uvicorn

    from flexroute.config_file import load_settings
    from flexroute.ledger import open_store
    from flexroute.logs import configure as configure_logging
    from flexroute.providers import PROVIDERS, upstream_lines
    from flexroute.proxy import create_app
    from flexroute.proxy.slow_clients import server_config
    from flexroute.proxy.workers import serve_workers, worker_count
    from flexroute.tracing import tracing_from_env, tracing_requested

    settings = load_settings()

    async def gateway_mode() -> bool:
        store = open_store(settings.database_url)
        try:
            return await store.has_keys()
        finally:
            await store.aclose()

    gateway = anyio.run(gateway_mode)
    if not gateway and not _is_loopback(args.host):
        raise ConfigError(
            f"refusing to listen on {args.host}: there are no flexroute keys in "
            f"{redact_url(settings.database_url)}, so this would be a sidecar serving the "
            "server's own provider keys to anyone who can reach it. Use --host 127.0.0.1, or "
            "create keys first (`flexroute keys create --org ORG`) to run in gateway mode."
        )
    if gateway and settings.secret_key is None:
        raise ConfigError(
            "gateway mode (flexroute keys exist) needs FLEXROUTE_SECRET_KEY to open the stored "
            "provider keys"
        )
    workers, why = worker_count(args.workers, settings, gateway=gateway)
    configure_logging(args.log_format, args.log_level)
    tracer = tracing_from_env()  # a missing extra: one warning line; a bad exporter: an error
    traces = "off" if tracer is None else tracer.description
    mode = "gateway" if gateway else "sidecar"
    limits = "redis" if settings.redis_url else "in-process"
    shown = f"{workers} worker{'' if workers == 1 else 's'}" + (f" ({why})" if why else "")
    logging.getLogger("flexroute").info(
        "flexroute %s proxy (%s mode, %s, %s rate limits) on http://%s:%s, ledger %s, "
        "traces %s; %s",
        __version__, mode, shown, limits, args.host, args.port,
        redact_url(settings.database_url), traces, "; ".join(upstream_lines(settings)),
        extra={
            "version": __version__, "mode": mode, "workers": workers, "workers_why": why or None,
            "rate_limits": limits,
            "store": redact_url(settings.database_url), "traces": traces,
            "upstreams": {p.name: getattr(settings, p.base_url_setting) for p in PROVIDERS},
        },
    )  # fmt: skip
    if workers > 1:
        if tracer is None and tracing_requested():
            os.environ["OTEL_SDK_DISABLED"] = "true"  # said once here, not once per worker
        elif tracer is not None:
            anyio.run(tracer.aclose)  # each worker builds its own
        return serve_workers(
            settings, host=args.host, port=args.port, workers=workers,
            log_format=args.log_format, log_level=args.log_level,
        )  # fmt: skip
    app = create_app(settings, gate_ttl=settings.billing_gate_ttl, tracer=tracer)
    config = server_config(
        app, settings, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
        log_config=None,  # uvicorn's own lines through flexroute's handler and format
        lifespan="on",  # a start-up error stops serve; shutdown closes the ledger and pools
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout),
    )  # fmt: skip
    _draining_server(uvicorn.Server)(config).run()
    return 0


def _draining_server(base: type[Server]) -> type[Server]:
    """uvicorn's server, but SIGTERM drains in-flight requests, flushes the ledger and exits 0,
    as process managers expect of a clean stop (uvicorn re-raises the signal after shutdown)."""
    import signal

    class DrainingServer(base):  # type: ignore[valid-type,misc]
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)  # uvicorn's own list
            if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
                captured.remove(sig)

    return DrainingServer


def _config_check(args: argparse.Namespace) -> int:
    from flexroute.config_file import describe, load_settings, unknown_environment
    from flexroute.table import render_table

    settings = load_settings()
    print(render_table(["setting", "value"], [list(row) for row in describe(settings)]))
    print(f"traces (OTEL_*): {_traces()}")
    unknown = unknown_environment()
    for name in unknown:
        print(f"flexroute: unknown setting in the environment: {name}", file=sys.stderr)
    return 1 if unknown else 0


def _traces() -> str:
    """What the OTEL_* variables make of traces; a bad exporter raises ConfigError."""
    import anyio

    from flexroute.tracing import tracing_from_env, tracing_requested

    tracer = tracing_from_env()
    if tracer is None:
        wanted = tracing_requested()
        return "off" if not wanted else "off: pip install 'flexroute[otel]' to export them"
    anyio.run(tracer.aclose)
    return tracer.description


def _emulate(args: argparse.Namespace) -> int:
    from flexroute.emulator import EmulatorConfig, serve

    if not _is_loopback(args.host):
        raise ConfigError(f"the emulator binds to loopback only, not {args.host}")
    config = EmulatorConfig(
        seed=args.seed,
        weather=args.weather,
        climate=args.climate,
        weather_speed=args.weather_speed,
        weather_start=args.weather_start,
    )
    weather = "" if args.weather is None else f", {args.climate} weather seed {args.weather}"
    print(f"flexroute emulator on http://{args.host}:{args.port} (seed {args.seed}{weather})")
    serve(host=args.host, port=args.port, config=config)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flexroute.demo import run_demo

    return run_demo(args.database_url, weather=args.weather)


def _prices(args: argparse.Namespace) -> int:
    from flexroute.catalog import default_catalog

    print(default_catalog().price_table())
    return 0


def _prices_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flexroute.commands._common import parse_when
    from flexroute.commands.prices_check import check

    at = None if args.at is None else parse_when(args.at, "--at")
    return check(None if args.catalog is None else Path(args.catalog), at=at)


def _request(args: argparse.Namespace) -> int:
    import anyio

    from flexroute.config_file import load_settings
    from flexroute.ledger import open_store

    async def fetch() -> int:
        store = open_store(load_settings().database_url)
        try:
            record = await store.get(args.request_id)
        finally:
            await store.aclose()
        if record is None:
            print(f"flexroute: no ledger record {args.request_id}", file=sys.stderr)
            return 1
        print(json.dumps(record.to_json(), indent=2))
        return 0

    return anyio.run(fetch)


if __name__ == "__main__":
    raise SystemExit(main())
