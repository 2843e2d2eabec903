"""The benchmark harness runs end to end and writes its outputs (never a speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _report, peers

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
class TestSmokeRun:
    def test_smoke_run_writes_json_plots_and_readme_table(self, tmp_path: Path) -> None:
        """``python -m benchmarks --smoke`` writes every JSON, every plot and the README table."""
        readme = tmp_path / "README.md"
        readme.write_text((ROOT / "benchmarks" / "README.md").read_text())
        results = tmp_path / "results"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks",
                "--smoke",
                "--results",
                str(results),
                "--readme",
                str(readme),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        for stem in ("fallback_lag", "overhead", "savings", "memory", "batch"):
            data = json.loads((results / f"{stem}.json").read_text())
            assert data["machine"]["cores"] >= 1
            assert "flexroute" in data["machine"]["versions"]
            assert (results / f"{stem}.png").stat().st_size > 1000
        assert "LiteLLM: skipped" in done.stdout
        assert "Goals (reported, not asserted)" in done.stdout
        text = readme.read_text()
        table = text.split(_report.BEGIN)[1].split(_report.END)[0]
        assert "Overhead against peers" in table
        assert "Savings against an oracle" in table
        assert "flexroute batch" in table
        batch = json.loads((results / "batch.json").read_text())
        calm = batch["rows"][0]
        assert calm["errors"] == 0
        assert calm["saving_vs_oracle"] is not None


class TestReport:
    def test_readme_refresh_replaces_only_between_markers(self, tmp_path: Path) -> None:
        """Refreshing the README keeps its prose and swaps the block between the markers."""
        readme = tmp_path / "README.md"
        readme.write_text(f"# Title\n\nprose\n\n{_report.BEGIN}\nold\n{_report.END}\n\ntail\n")
        _report.refresh_readme(readme, "new table")
        assert readme.read_text() == (
            f"# Title\n\nprose\n\n{_report.BEGIN}\nnew table\n{_report.END}\n\ntail\n"
        )

    def test_readme_without_markers_gets_a_results_section(self, tmp_path: Path) -> None:
        """A README without markers gains a results section at its end."""
        readme = tmp_path / "README.md"
        readme.write_text("# Title\n")
        _report.refresh_readme(readme, "table")
        assert readme.read_text().endswith(f"{_report.BEGIN}\ntable\n{_report.END}\n")


class TestPeers:
    def test_missing_litellm_is_reported_not_faked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without LiteLLM's venv the peer is skipped with a line saying how to install it."""
        monkeypatch.setenv("FLEXROUTE_BENCH_LITELLM_VENV", str(tmp_path / "absent"))
        exe, why = peers.litellm_status()
        assert exe is None
        assert "--install-litellm" in why


class TestSavingsScore:
    def test_the_state_knowing_router_skips_flex_only_in_an_outage(self) -> None:
        """The state-knowing reference sends every request whose model is not in an outage
        (waiting its budget out when flex does not start) and skips the rest, even one the
        oracle would send."""
        from benchmarks._traces import NEVER, Planned
        from benchmarks.savings import score

        def planned(weather: str, queue: float) -> Planned:
            refusals = None if queue == NEVER else 0
            return Planned(0.0, "gpt-5-mini", 2_000, 20, refusals, 0.0, queue, weather)

        trace = [planned("calm", 0.1), planned("outage", 0.3), planned("recovery", NEVER)]
        usage = {"input_tokens": 2_000, "output_tokens": 20}
        record = {"saving_usd": "0", "tier_served": "standard", "flex_wait_ms": 0}
        records = [{**record, "usage": usage, "attempt_log": []} for _ in trace]
        scored = score(trace, records, 1.0)
        assert scored["knowing_vs_oracle"] == pytest.approx(0.5)
        assert scored["knowing_wait_mean_ms"] == pytest.approx((100 + 0 + 1000) / 3, abs=0.1)
        scripted = [Planned(0.0, "gpt-5-mini", 2_000, 20, 0, 0.0, 0.1)]
        assert score(scripted, records[:1], 1.0)["knowing_vs_oracle"] is None
