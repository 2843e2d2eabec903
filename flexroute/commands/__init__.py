"""The code behind ``flexroute`` subcommands that touch the ledger (``flexroute.cli`` only
parses arguments and dispatches here). Each returns the process exit code."""
