"""One fast-mode emulator worker on a port shared with its siblings (SO_REUSEPORT).

python -m benchmarks._fast_emulator --port 8090
"""

from __future__ import annotations

import argparse
import socket

import uvicorn

from flexroute.emulator import EmulatorConfig, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", args.port))
    app = create_app(EmulatorConfig(fast=True, log_limit=1000))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=75)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
