"""create_backend: FANOUT_BACKEND's URL scheme picks the engine; anything else is refused."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from app.config import Settings
from app.services.backends import Backend, BackendConfigError, create_backend
from app.services.backends.local import LocalBackend
from app.services.backends.memory import MemoryBackend
from app.services.message import Message


def backend_for(url: str, *, local_dir: str = "", local_group: str = "") -> Backend:
    """The backend for FANOUT_BACKEND=``url``.

    Settings are built directly, not through ``Settings.from_env``: that refuses a bad URL
    on its own first, and create_backend must refuse it too when given settings in code.
    """
    return create_backend(Settings(backend=url, local_dir=local_dir, local_group=local_group))


def refusal(url: str) -> str:
    """The message of the error ``url`` is refused with."""
    with pytest.raises(BackendConfigError) as caught:
        backend_for(url)
    return str(caught.value)


def test_memory_url_picks_the_one_process_backend() -> None:
    backend = backend_for("memory://")
    assert isinstance(backend, MemoryBackend)
    assert backend.name == "memory"


def test_local_url_picks_the_unix_socket_backend() -> None:
    backend = backend_for("local://")
    assert isinstance(backend, LocalBackend)
    assert backend.name == "local"


def test_the_default_setting_is_the_local_backend() -> None:
    assert isinstance(create_backend(Settings()), LocalBackend)


async def test_the_local_backend_uses_the_configured_folder_and_group(local_dir: Path) -> None:
    backend = backend_for("local://", local_dir=str(local_dir), local_group="g1")
    delivered: list[tuple[str, Message]] = []
    gaps: list[str] = []
    await backend.start(
        lambda channel, message: delivered.append((channel, message)),
        lambda reason, channel=None: gaps.append(reason),
    )
    try:
        assert (local_dir / "g1" / f"{os.getpid()}.sock").exists()
        assert backend.status()["group"] == "g1"
    finally:
        await backend.stop()
    assert not (local_dir / "g1" / f"{os.getpid()}.sock").exists()


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6390/2", "rediss://127.0.0.1:6390/2", "unix:///run/redis/redis.sock"],
)
def test_redis_urls_pick_the_redis_backend_without_connecting(url: str) -> None:
    pytest.importorskip("redis")
    from app.services.backends.redis import RedisBackend

    backend = backend_for(url)  # nothing listens there: creating must not connect
    assert isinstance(backend, RedisBackend)
    assert backend.name == "redis"


def test_the_redis_backend_gets_the_url_it_was_given_and_shows_it_without_password() -> None:
    pytest.importorskip("redis")
    from app.services.backends.redis import RedisBackend

    backend = backend_for("redis://:hunter2@127.0.0.1:6390/3")
    assert isinstance(backend, RedisBackend)
    assert backend.display_url == "redis://127.0.0.1:6390/3"


def test_an_unknown_scheme_is_refused_with_the_schemes_there_are() -> None:
    message = refusal("carrier-pigeon://coop")
    assert "FANOUT_BACKEND='carrier-pigeon://coop'" in message
    assert "unknown scheme 'carrier-pigeon'" in message
    for scheme in ("memory://", "local://", "redis://"):
        assert scheme in message


def test_a_refusal_is_a_value_error_so_start_up_fails_like_any_bad_setting() -> None:
    with pytest.raises(ValueError):
        backend_for("postgres://db/fanout")


@pytest.mark.parametrize("url", ["memory", "", "redis"])
def test_a_value_without_a_scheme_is_refused(url: str) -> None:
    assert "use memory://, local:// or redis://" in refusal(url)


def test_a_password_in_a_refused_url_is_not_repeated_in_the_error() -> None:
    message = refusal("nats://fanout:hunter2@broker:4222")
    assert "hunter2" not in message
    assert "fanout:***@broker:4222" in message


def test_a_redis_url_without_redis_py_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail as if redis-py were not installed.
    monkeypatch.setitem(sys.modules, "app.services.backends.redis", None)
    message = refusal("redis://:hunter2@127.0.0.1:6390/0")
    assert "pip install 'fanout[redis]'" in message
    assert "hunter2" not in message
