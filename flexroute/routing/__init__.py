"""Routing: :mod:`decide` (pure: which route) and :mod:`flex` (async: running it)."""
