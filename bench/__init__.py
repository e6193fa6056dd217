"""Benchmarks of the chat server, run with `python -m bench`."""
