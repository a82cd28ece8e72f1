"""Authorizer: the channel rules and a connection's token, turned into yes or no."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.rules import ChannelRules
from app.services.tokens import Identity, TokenError, TokenVerifier

UNAUTHORIZED = 401
FORBIDDEN = 403


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a right is refused: ``code`` 401 (no, or no valid, token) or 403 (not allowed)."""

    code: int
    message: str


def channel_owner(channel: str) -> str | None:
    """The user a ``name#<user>`` channel belongs to, None for other channels."""
    _, sep, owner = channel.partition("#")
    return owner if sep else None


class Authorizer:
    """Decides subscribe and publish rights; the HTTP API may always publish.

    Order: a user channel (``name#42``) belongs to user 42 alone, whatever else says yes;
    then a token capability for the right grants it; then the first matching channel rule.
    """

    __slots__ = ("rules", "tokens")

    def __init__(self, rules: ChannelRules, tokens: TokenVerifier) -> None:
        self.rules = rules
        self.tokens = tokens

    def may_subscribe(
        self, identity: Identity | None, channel: str, token: str | None = None
    ) -> Refusal | None:
        """None if ``identity`` may subscribe to ``channel`` (with a subscription ``token``
        where the rule asks for one), else why not."""
        owner = channel_owner(channel)
        if owner is not None:
            if identity is None:
                return Refusal(UNAUTHORIZED, f"{channel} is a user channel: connect with a token")
            if identity.user != owner:
                return Refusal(FORBIDDEN, f"{channel} is another user's channel")
            return None
        if identity is not None and identity.may("sub", channel):
            return None
        rule = self.rules.rule_for(channel).subscribe
        if rule == "any":
            return None
        if rule == "authenticated":
            if identity is None:
                return Refusal(UNAUTHORIZED, f"{channel} needs an authenticated connection")
            return None
        if rule == "token":
            return self._subscription_token(identity, channel, token)
        return Refusal(FORBIDDEN, f"subscribing to {channel} is not allowed")

    def may_publish(
        self, identity: Identity | None, channel: str, *, subscribed: bool
    ) -> Refusal | None:
        """None if ``identity`` may publish on ``channel`` (``subscribed``: it holds the
        channel), else why not."""
        if identity is not None and identity.may("pub", channel):
            return None
        rule = self.rules.rule_for(channel).publish
        if rule == "any":
            return None
        if rule == "subscribers":
            if subscribed:
                return None
            return Refusal(FORBIDDEN, f"subscribe to {channel} before publishing")
        if rule == "authenticated":
            if identity is None:
                return Refusal(UNAUTHORIZED, f"publishing on {channel} needs a token")
            return None
        return Refusal(FORBIDDEN, f"publishing on {channel} is not allowed")

    def _subscription_token(
        self, identity: Identity | None, channel: str, token: str | None
    ) -> Refusal | None:
        if not token:
            return Refusal(UNAUTHORIZED, f"{channel} needs a subscription token")
        try:
            grant = self.tokens.subscription(token)
        except TokenError as exc:
            return Refusal(UNAUTHORIZED, exc.reason)
        if grant.channel != channel:
            return Refusal(FORBIDDEN, f"the subscription token is for {grant.channel}")
        user = identity.user if identity is not None else ""
        if grant.user != user:
            return Refusal(FORBIDDEN, "the subscription token is for another user")
        return None
