"""The LiteLLM proxy as a peer, installed in a venv of its own so its pins never touch ours.

    python -m benchmarks --install-litellm     # once: python -m venv + pip install litellm[proxy]

The venv lives at ``$FLEXROUTE_BENCH_LITELLM_VENV`` (default ``$TMPDIR/flexroute-bench-litellm``).
Where it is missing or LiteLLM will not start, the overhead benchmark says so and runs without
it: no figure is ever made up.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks._procs import free_port, stopping, wait_ready

DEFAULT_VENV = Path(tempfile.gettempdir()) / "flexroute-bench-litellm"
MODEL = "gpt-5-mini"

_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {upstream}/v1
      api_key: bench
litellm_settings:
  telemetry: false
  drop_params: true
  turn_off_message_logging: true
general_settings:
  master_key: {key}
"""
# A fixed key for a loopback-only benchmark: LiteLLM refuses to start without a master key.
MASTER_KEY = "sk-flexroute-bench-0123456789abcdef0123456789abcdef"


def litellm_venv() -> Path:
    return Path(os.environ.get("FLEXROUTE_BENCH_LITELLM_VENV", DEFAULT_VENV))


def litellm_status() -> tuple[Path | None, str]:
    """(the ``litellm`` executable, its version) or (None, why it cannot be used)."""
    venv = litellm_venv()
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        return None, (
            f"LiteLLM not installed (no {exe}); run `python -m benchmarks --install-litellm` "
            "to compare against it"
        )
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return None, f"LiteLLM venv at {venv} is broken: {probe.stderr.strip()[-300:]}"
    return exe, probe.stdout.strip()


def install_litellm() -> int:
    venv = litellm_venv()
    print(f"installing litellm[proxy] into {venv} (a venv of its own)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"]
    return subprocess.run(pip, check=False).returncode


@contextlib.contextmanager
def litellm_proxy(exe: Path, upstream: str) -> Iterator[tuple[str, int]]:
    """The LiteLLM proxy (one worker) in front of ``upstream``; yields (URL, pid)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "litellm.yaml"
        config.write_text(_CONFIG.format(model=MODEL, upstream=upstream, key=MASTER_KEY))
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_URL", "OPENAI_", "LITELLM_", "REDIS_"))
        }
        env |= {
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "DISABLE_ADMIN_UI": "True",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no price-map download at start
            "NO_DOCS": "True",
        }
        log = (Path(tmp) / "litellm.log").open("wb")
        proc = subprocess.Popen(
            [
                str(exe),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        with stopping(proc), log:
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(proc, f"{url}/health/liveliness", timeout=180)
            except OSError:
                tail = (Path(tmp) / "litellm.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"LiteLLM did not start: {tail}") from None
            yield url, proc.pid


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise OSError(f"exited with {proc.returncode}")
        try:
            wait_ready(url, timeout=1.0)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
