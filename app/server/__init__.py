"""The only code that knows the server's (uvicorn's) internals.

:class:`~app.server.application.FanoutApp` is Starlette with a short way in for sockets;
:class:`~app.server.socket.ServerSocket` is the per-socket adapter below ASGI (abort, the
direct write path, memory trims, denial bookkeeping). Everything else in ``app`` speaks ASGI.
"""
