"""Typed helpers the tests share: servers, clients, waiting, fakes."""
