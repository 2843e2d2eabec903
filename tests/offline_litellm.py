"""``litellm``, imported offline: it fetches a price map and Anthropic header tables from the
internet at import and on first use unless told not to, and these tests have no internet.
Import it from here (``from tests.offline_litellm import litellm``), never directly."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

import litellm  # after the settings above, which it reads at import

__all__ = ["litellm"]
