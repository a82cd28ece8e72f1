"""Channel rules: who may subscribe to and publish on which channels, from FANOUT_CONFIG.

Rules are ordered globs, first match wins; the built-in last rule (``*``: anyone may
subscribe, subscribers may publish) is today's open behaviour, so a server without a rules
file behaves as before. Later issues read ``presence``, ``join_leave``, ``history_size`` and
``history_ttl`` from the same rules.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

Subscribe = Literal["any", "authenticated", "token", "none"]
Publish = Literal["any", "subscribers", "authenticated", "none"]

CACHE_SIZE = 4096
"""Channels whose matching rule is remembered (names repeat; the rules never change)."""


class RulesError(ValueError):
    """The rules file cannot be used; ``str()`` is one line with where and why."""


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """What one ``[[channels]]`` table says about the channels it matches."""

    match: str
    subscribe: Subscribe = "any"
    publish: Publish = "subscribers"
    presence: bool = False
    join_leave: bool = False
    history_size: int = 0
    history_ttl: float = 0.0


DEFAULT_RULE = ChannelRule(match="*")
"""The built-in last rule: today's open behaviour."""


class ChannelRules:
    """The ordered rules; :meth:`rule_for` is the first that matches a channel name."""

    __slots__ = ("_cache", "rules")

    def __init__(self, rules: tuple[ChannelRule, ...] = ()) -> None:
        self.rules = (*rules, DEFAULT_RULE)
        self._cache: dict[str, ChannelRule] = {}

    def rule_for(self, channel: str) -> ChannelRule:
        """The first rule whose ``match`` glob matches ``channel``."""
        rule = self._cache.get(channel)
        if rule is None:
            rule = next(r for r in self.rules if fnmatchcase(channel, r.match))
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()  # a bound, not an LRU: misses only cost a scan
            self._cache[channel] = rule
        return rule

    @classmethod
    def from_toml(cls, text: str) -> ChannelRules:
        """Rules from a TOML document of ``[[channels]]`` tables; RulesError if unusable."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(str(exc)) from None  # names the line and column
        unknown = sorted(set(document) - {"channels"})
        if unknown:
            raise RulesError(f"unknown table {unknown[0]!r}; expected [[channels]]")
        tables = document.get("channels", [])
        if not isinstance(tables, list):
            raise RulesError("channels must be an array of tables ([[channels]])")
        lines = [
            number
            for number, line in enumerate(text.splitlines(), start=1)
            if line.replace(" ", "").startswith("[[channels]]")
        ]
        return cls(tuple(_rule(table, _where(i, lines)) for i, table in enumerate(tables)))


_FIELDS = {f.name: f for f in fields(ChannelRule)}
_CHOICES: dict[str, tuple[str, ...]] = {
    "subscribe": get_args(Subscribe),
    "publish": get_args(Publish),
}


def _where(index: int, lines: list[int]) -> str:
    """``line N: [[channels]] #k``: where the k-th table starts, for error messages."""
    table = f"[[channels]] #{index + 1}"
    return f"line {lines[index]}: {table}" if index < len(lines) else table


def _rule(table: Any, where: str) -> ChannelRule:
    if not isinstance(table, dict):
        raise RulesError(f"{where}: expected a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RulesError(f"{where}: unknown key {key!r}{hint}")
        values[key] = _value(key, value, where)
    if "match" not in values:
        raise RulesError(f"{where}: 'match' is required (a glob such as \"chat.*\")")
    return ChannelRule(**values)


def _value(key: str, value: Any, where: str) -> Any:
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise RulesError(
                f"{where}: {key}={value!r}: expected one of {', '.join(_CHOICES[key])}"
            )
        return value
    if key == "match":
        if not isinstance(value, str) or not value:
            raise RulesError(f"{where}: match={value!r}: expected a non-empty glob string")
        return value
    if key in ("presence", "join_leave"):
        if not isinstance(value, bool):
            raise RulesError(f"{where}: {key}={value!r}: expected true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RulesError(f"{where}: {key}={value!r}: expected a number >= 0")
    if key == "history_size" and not isinstance(value, int):
        raise RulesError(f"{where}: {key}={value!r}: expected a whole number")
    return value
