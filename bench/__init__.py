"""Fanout benchmark suite: `python -m bench --help`."""
