"""``flexroute demo``: the README's first command, with no keys and its own scratch ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class TestDemo:
    def test_runs_without_keys_and_leaves_the_operators_ledger_alone(self, tmp_path: Path) -> None:
        """Every row answered; the configured ledger is never created; it says what next."""
        ledger = tmp_path / "real-ledger.sqlite3"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | {
            "FLEXROUTE_DATABASE_URL": f"sqlite:///{ledger}"
        }
        done = subprocess.run(
            [sys.executable, "-m", "flexroute.cli", "demo"],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "a scratch ledger, deleted at exit" in done.stdout
        assert "What next" in done.stdout
        assert not ledger.exists()
        rows = [line for line in done.stdout.splitlines() if line.startswith("chat, flex")]
        assert any(" flex " in row and "2s" in row for row in rows)

    def test_weather_segment_shows_an_outage_and_the_recovery(self) -> None:
        """``demo --weather``: flex served in calm, never in the outage (skipped once it is
        predicted), served again after."""
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        done = subprocess.run(
            [sys.executable, "-m", "flexroute.cli", "demo", "--weather"],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        timeline = done.stdout.split("Flex weather (seed")[1].split("What next")[0]
        rows = [line.split() for line in timeline.splitlines()[3:] if line.strip()]
        states = [row[1] for row in rows]  # row: weather s, state, route, ...
        assert "outage" in states
        outage = states.index("outage")
        served = [i for i, row in enumerate(rows) if row[2] == "flex"]  # route flex: served flex
        assert all(states[i] != "outage" for i in served)
        assert any(i < outage and states[i] == "calm" for i in served)
        assert any(i > outage and states[i] in ("recovery", "calm") for i in served)
        # adaptive flex: once the outage is seen, requests go straight to standard (they
        # overlap, a 1 s budget every 0.4 s: the first request of the outage may still be
        # waiting when the next ones' refusals show it, and stop then)
        skipped = [i for i, row in enumerate(rows) if "flex-predicted-unavailable" in row]
        assert skipped
        assert min(skipped) >= outage  # never before the outage
