"""Fanout: a real-time WebSocket broadcast server on Starlette and uvicorn."""
