"""The HTTP API (POST /api/*): keys, request decoding, publishing; routes/api.py is its I/O."""
