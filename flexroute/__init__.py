"""flexroute: flex tier first, standard tier at the deadline, and the saving measured.

The public API is listed in ``__all__`` (a test holds it).
"""

from __future__ import annotations

from flexroute.config import Settings
from flexroute.errors import (
    CatalogError,
    ConfigError,
    FlexrouteError,
    LedgerError,
    PaymentError,
    RequestRejected,
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamStreamBroken,
)
from flexroute.sdk import Outcome, capture, wrap
from flexroute.usage import Tier, Usage

__version__ = "0.1.0"

__all__ = [
    "CatalogError",
    "ConfigError",
    "FlexrouteError",
    "LedgerError",
    "Outcome",
    "PaymentError",
    "RequestRejected",
    "Settings",
    "Tier",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamMalformed",
    "UpstreamStreamBroken",
    "Usage",
    "__version__",
    "capture",
    "wrap",
]
