"""Fanout's Python SDK: an asyncio client for ``fanout.v1``, server API clients and tokens.

Named ``fanout_sdk`` because ``fanout`` is taken on the package index (by Fanout.io's
library, another realtime product): installing both must not clash.

- :mod:`fanout_sdk.client`: :class:`Client`, connections that reconnect, recover and refresh.
- :mod:`fanout_sdk.api`: :class:`FanoutApi` (sync) and :class:`AsyncFanoutApi` for backends.
- :mod:`fanout_sdk.tokens`: :func:`connection_token` and :func:`subscription_token`.
- ``python -m fanout_sdk.tail ws://host/ws CHANNEL``: tail a channel from a terminal.
"""

from fanout_sdk.api import AsyncFanoutApi, FanoutApi
from fanout_sdk.client import (
    Client,
    Gap,
    Join,
    Leave,
    State,
    StateChange,
    Subscribed,
    Subscription,
    SubscriptionEvent,
    Unsubscribed,
)
from fanout_sdk.errors import (
    ApiError,
    ClientClosed,
    CommandError,
    CommandTimeout,
    DisconnectedError,
    FanoutError,
    SubscriptionEnded,
)
from fanout_sdk.frames import (
    ClientInfo,
    HistoryResult,
    PresenceStats,
    Publication,
    PublishResult,
    StreamPosition,
)
from fanout_sdk.tokens import connection_token, subscription_token

__all__ = [
    "ApiError",
    "AsyncFanoutApi",
    "Client",
    "ClientClosed",
    "ClientInfo",
    "CommandError",
    "CommandTimeout",
    "DisconnectedError",
    "FanoutApi",
    "FanoutError",
    "Gap",
    "HistoryResult",
    "Join",
    "Leave",
    "PresenceStats",
    "Publication",
    "PublishResult",
    "State",
    "StateChange",
    "StreamPosition",
    "Subscribed",
    "Subscription",
    "SubscriptionEnded",
    "SubscriptionEvent",
    "Unsubscribed",
    "connection_token",
    "subscription_token",
]
__version__ = "0.1.0"
