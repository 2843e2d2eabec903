"""``flexroute demo``: the README's first command, with no keys and its own scratch ledger."""

from __future__ import annotations

import os
import re
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
        """``demo --weather``: flex served in calm, skipped once the outage is predicted,
        served again after (in the outage only by a retry that reached its end)."""
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        done = subprocess.run(
            [sys.executable, "-m", "flexroute.cli", "demo", "--weather"],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        timeline = done.stdout.split("Flex weather (seed")[1].split("What next")[0]
        header = timeline.splitlines()[0]
        speed = float(re.search(r"(\d+)x speed", header).group(1))  # type: ignore[union-attr]
        budget = float(re.search(r"start_within (\d+)s", header).group(1))  # type: ignore[union-attr]
        rows = [line.split() for line in timeline.splitlines()[3:] if line.strip()]
        states = [row[1] for row in rows]  # row: weather s, state, route, ...
        assert "outage" in states
        outage = states.index("outage")
        ended = next(float(r[0]) for r in rows[outage:] if r[1] != "outage")
        served = [i for i, row in enumerate(rows) if row[2] == "flex"]  # route flex: served flex
        # a request that arrived in the outage is served at flex only by a retry after the
        # outage ended, inside its budget (in weather seconds: the budget times the speed)
        reach = budget * speed
        assert all(states[i] != "outage" or float(rows[i][0]) >= ended - reach for i in served)
        assert any(i < outage and states[i] == "calm" for i in served)
        assert any(i > outage and states[i] in ("recovery", "calm") for i in served)
        # adaptive flex: once the outage is seen, requests go straight to standard (the first
        # requests of the outage may still be waiting when the next ones' refusals show it,
        # and stop then); a burst of refusals in the degraded weather before it may be taken
        # for it too, calm weather never
        skipped = [i for i, row in enumerate(rows) if "flex-predicted-unavailable" in row]
        assert any(states[i] == "outage" for i in skipped)
        assert all(states[i] != "calm" for i in skipped if i < outage)
