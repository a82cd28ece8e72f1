"""Thin protocol adapters: each module translates one surface and calls the services."""
