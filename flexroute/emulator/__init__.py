"""The provider emulator: OpenAI, Gemini and Anthropic wire formats on loopback, with a seeded
model of flex and standard capacity and a per-request control header (``x-emulator``).

    from flexroute.emulator import EmulatorConfig, create_app, serve

    serve(port=8090, config=EmulatorConfig(seed=7))   # what ``flexroute emulate`` runs

Tests use ``flexroute.testing.emulator()``, which runs it in a thread and reads its log.
"""

from __future__ import annotations

from flexroute.emulator.app import Emulator, create_app
from flexroute.emulator.capacity import EmulatorConfig, Tier
from flexroute.emulator.controls import ControlError, Controls, parse_controls
from flexroute.emulator.log import fingerprint

__all__ = [
    "ControlError",
    "Controls",
    "Emulator",
    "EmulatorConfig",
    "Tier",
    "create_app",
    "fingerprint",
    "parse_controls",
    "serve",
]


def serve(host: str = "127.0.0.1", port: int = 8090, config: EmulatorConfig | None = None) -> None:
    """Run the emulator with uvicorn until interrupted (loopback by default)."""
    import uvicorn

    # Providers' load balancers keep idle connections for a minute or more; uvicorn's 5 s
    # default would make clients race the server's close when reusing pooled connections.
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=75,
    )
