"""The bench's token, history and recovery pieces: unit checks, then smoke runs against real
Fanout servers started with the extra env (behaviour only, never timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest

from bench import protocol as wsp
from bench import runner, servers
from bench.client import check_recovery, reply_position, sign_tokens

ROOT = Path(__file__).resolve().parent.parent
SECRET = "a-secret-of-at-least-32-bytes-for-hs256"
needs_server = pytest.mark.skipif(
    not (ROOT / "app" / "main.py").exists(), reason="the Fanout server is not there yet"
)


def run_bench(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--no-pin"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    result: dict[str, Any] = json.loads(lines[0])
    assert proc.stderr.strip(), "a human summary is printed on stderr"
    return result


# -- units ------------------------------------------------------------------------------------


def test_distinct_tokens_differ_and_verify_with_the_secret() -> None:
    toks = sign_tokens(20, SECRET, "distinct", 1)
    assert len(set(toks)) == 20
    claims = jwt.decode(toks[3], SECRET, algorithms=["HS256"])
    assert claims["sub"].startswith("bench-1-")


def test_same_token_mode_repeats_one_token() -> None:
    toks = sign_tokens(5, SECRET, "same", 2)
    assert len(toks) == 5 and len(set(toks)) == 1


def test_unknown_token_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        sign_tokens(1, "s", "sometimes", 0)


def test_sub_carries_since_as_json() -> None:
    cmd = json.loads(wsp.v1_sub(1, "hist.x", (7, "ab")))
    assert cmd == {"id": 1, "op": "sub", "ch": "hist.x", "since": {"o": 7, "e": "ab"}}
    assert "since" not in json.loads(wsp.v1_sub(1, "news"))


def _reply(offsets: list[int], seqs: list[int], recovered: bool = True) -> bytes:
    pubs = []
    for o, seq in zip(offsets, seqs, strict=True):
        data = json.loads(wsp.make_json_data(64, 1000, seq, 123))
        pubs.append({"o": o, "d": data})
    res = {"o": offsets[-1] if offsets else 0, "e": "ep", "recovered": recovered, "pubs": pubs}
    return json.dumps({"id": 1, "res": res}, separators=(",", ":")).encode()


def test_recovery_check_accepts_exactly_the_missed_publications_in_order() -> None:
    assert check_recovery(_reply([11, 12, 13], [5, 6, 7]), (10, "ep"), 3) == ""
    assert reply_position(_reply([11, 12, 13], [5, 6, 7])) == (13, "ep")


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (_reply([11, 12], [5, 6]), "2 publications"),
        (_reply([11, 13, 12], [5, 6, 7]), "offsets out of order"),
        (_reply([11, 12, 13], [5, 7, 6]), "sequence out of order"),
        (_reply([11, 12, 13], [5, 6, 7], recovered=False), "not recovered"),
        (b'{"id":1,"error":{"code":503,"message":"history unavailable"}}', "error reply"),
        (b"", "no reply"),
    ],
)
def test_recovery_check_names_what_is_wrong(reply: bytes, why: str) -> None:
    assert check_recovery(reply, (10, "ep"), 3) == why


def test_plan_runs_history_and_token_items_only_where_the_server_has_them() -> None:
    specs = servers.server_specs(2)
    items = {i.key: i for i in runner.plan(True, [1000])}
    assert items["fanout-hist-1000"].applies(specs["fanout-hist"])
    assert not items["fanout-hist-1000"].applies(specs["fanout"])
    assert not items["fanout-1000"].applies(specs["fanout-hist"])
    assert items["fanout-1000"].applies(specs["fanout-auth"])
    assert items["connect-token-distinct-5000"].applies(specs["fanout-auth"])
    assert not items["connect-token-same-5000"].applies(specs["fanout"])
    assert items["connect-5000"].applies(specs["fanout"])
    assert items["recovery-1000"].applies(specs["fanout-hist-w2"])
    assert items["latency-v1"].applies(specs["fanout-hist"])
    assert not items["latency-hist"].applies(specs["node-ws"])


def test_existing_specs_keep_their_env() -> None:
    specs = servers.server_specs(2)
    assert specs["fanout"].env == servers.BROKER_ENV
    assert specs["fanout-w2"].env == servers.BROKER_ENV
    assert specs["fanout-auth"].env["FANOUT_TOKEN_HMAC_SECRET"] == servers.TOKEN_SECRET
    assert Path(specs["fanout-hist"].env["FANOUT_CONFIG"]).is_file()


# -- smoke runs against real servers -------------------------------------------------------------


@needs_server
@pytest.mark.parametrize("flag", ["--token", "--same-token"])
def test_connect_with_tokens(flag: str) -> None:
    r = run_bench("connect", "--server", "fanout-auth", flag, "--connections", "100")
    assert r["params"]["token"] == ("distinct" if flag == "--token" else "same")
    assert r["connected"] == 100 and r["failed"] == 0


@needs_server
def test_tokens_are_really_checked() -> None:
    r = run_bench(
        "connect", "--server", "fanout-auth", "--token", "--secret", "wrong", "--connections", "20"
    )
    assert r["connected"] == 0
    assert r["errors"] == {"HandshakeError": 20}


@needs_server
def test_fanout_on_a_history_channel() -> None:
    r = run_bench(
        "fanout",
        "--server",
        "fanout-hist",
        "--protocol",
        "v1",
        "--channel",
        "hist.bench",
        "--subscribers",
        "100",
        "--duration",
        "1.5",
        "--warmup",
        "0.3",
    )
    assert r["params"]["channel"] == "hist.bench"
    assert r["connect"]["ok"] == 100
    assert r["messages_sent"] > 0 and r["subscribers_without_frames"] == 0
    assert r["lost_connections"] == 0


@needs_server
def test_latency_on_a_history_channel() -> None:
    r = run_bench(
        "latency",
        "--server",
        "fanout-hist",
        "--protocol",
        "v1",
        "--channel",
        "hist.bench",
        "--subscribers",
        "50",
        "--rates",
        "50",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    )
    phase = r["phases"][0]
    assert phase["latency"]["count"] > 0
    assert phase["subscribers_without_frames"] == 0


@needs_server
def test_recovery_of_100_clients() -> None:
    r = run_bench("recovery", "--server", "fanout-hist", "--clients", "100", "--behind", "30")
    assert r["params"]["channel"] == "hist.bench"
    assert r["dropped"] == 100 and r["published"] == 30
    assert r["reconnected"] == 100 and r["errors"] == {}
    assert r["complete"] == 100 and r["problems"] == {} and r["all_complete"] is True
    assert r["recovery_s"] >= 0
