"""flexroute's benchmarks: run on loopback against the emulator; see benchmarks/README.md."""
