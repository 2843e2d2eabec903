"""One module per provider wire format. Which dialect serves a request is the provider
registry's business (:mod:`flexroute.providers`); dialects know no provider but their own."""

from __future__ import annotations

from flexroute.dialects.base import Dialect, ErrorKind, Observer, RequestFacts, ResponseFacts

__all__ = ["Dialect", "ErrorKind", "Observer", "RequestFacts", "ResponseFacts"]
