"""Behaviour: connection registry, fan-out, backends, counters."""
