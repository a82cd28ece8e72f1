"""Helpers for the tests, one module per concern; the fixtures themselves are in conftest.py.

- :mod:`tests.support.servers`: real servers in subprocesses (ServerProcess, SERVERS, ...)
- :mod:`tests.support.waiting`: polling until a condition holds (wait_for, eventually)
- :mod:`tests.support.stats`: reading ``/stats`` and predicates on it
- :mod:`tests.support.clients`: what a well-behaved WebSocket client checks and receives
- :mod:`tests.support.rawws`: a raw WebSocket client that can misbehave on the wire
- :mod:`tests.support.redis_server`: a throwaway real ``redis-server``
- :mod:`tests.support.fakes`: stand-ins for the server side of a socket, for unit tests
"""
