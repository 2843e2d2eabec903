"""``flexroute serve`` as a child process of the test: its URL, its pid (for /proc), its ledger."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from benchmarks._procs import free_port, module_process, rss_bytes


@dataclass(frozen=True)
class Served:
    base: str
    port: int
    proc: subprocess.Popen[bytes]

    def rss_bytes(self) -> int:
        """The serve process's resident set size, from /proc."""
        rss = rss_bytes([self.proc.pid])
        if rss == 0:
            raise AssertionError(f"no VmRSS in /proc/{self.proc.pid}/status")
        return rss

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def connections_to(self, port: int) -> int:
        """Established TCP connections from this process to loopback ``port`` (its sockets'
        inodes matched against /proc/net/tcp)."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            with suppress(OSError):
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        count = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and int(remote.split(":")[1], 16) == port and inode in inodes:
                count += 1
        return count

    def gauge(self, name: str) -> float:
        """A ``flexroute_<name>`` gauge from ``GET /metrics``."""
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as response:  # noqa: S310
            for line in response.read().decode().splitlines():
                if line.startswith(f"flexroute_{name} "):
                    return float(line.split()[1])
        raise AssertionError(f"no flexroute_{name} in /metrics")

    def healthy(self, path: str = "health") -> bool:
        try:
            url = f"{self.base}/flexroute/v1/{path}"
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False


@contextmanager
def serve(
    upstream_url: str, ledger: Path, *, environ: dict[str, str] | None = None, **settings: str
) -> Iterator[Served]:
    """``flexroute serve`` with every provider at ``upstream_url`` (server keys of its own), its
    ledger in ``ledger``, and ``FLEXROUTE_<NAME>`` settings (plus any other ``environ``);
    stopped with SIGTERM at the end."""
    port = free_port()
    env = {
        "FLEXROUTE_OPENAI_BASE_URL": f"{upstream_url}/v1",
        "FLEXROUTE_GEMINI_BASE_URL": upstream_url,
        "FLEXROUTE_ANTHROPIC_BASE_URL": upstream_url,
        "FLEXROUTE_DATABASE_URL": f"sqlite:///{ledger}",
        "OPENAI_API_KEY": "sk-server",
        "GEMINI_API_KEY": "g-server",
        "ANTHROPIC_API_KEY": "a-server",
        **{f"FLEXROUTE_{k.upper()}": v for k, v in settings.items()},
        **(environ or {}),
    }
    base = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--workers", "1"]
    with module_process("flexroute.cli", args, f"{base}/flexroute/v1/health", env) as proc:
        yield Served(base, port, proc)
