"""The ASGI aliases, re-exported from :mod:`flexroute.asgi` (their one home) for imports
written before they moved there."""

from __future__ import annotations

from flexroute.asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]
