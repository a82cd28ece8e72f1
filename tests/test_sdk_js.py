"""The JavaScript SDK (static/sdk/fanout.js) in Node, against real servers.

``node --test tests/js/*.test.mjs``: the files start their own uvicorn servers (one with
tokens and channel rules, one stopped by PID and restarted on the same port), and a
scripted socket for what a server cannot be made to do on demand. Node 20 has no global
WebSocket, so the tests use the ``ws`` package, installed by ``npm ci`` into the git-ignored
tests/js/node_modules (only the npm registry is reached). The runner's exit status and its
summary are what this test asserts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import httpx
import pytest

from tests.support.servers import ROOT, ServerProcess

JS = ROOT / "tests" / "js"
SDK = ROOT / "static" / "sdk" / "fanout.js"
# What may skip, and only for this reason: the feature has not landed on the server yet.
MAY_SKIP = {"history: ", "presence: "}


def _need(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is not installed: the SDK tests need it in CI", pytrace=False)
        pytest.skip(f"{program} is not installed (apt-get install nodejs npm)")
    return found


def _install(npm: str) -> None:
    if (JS / "node_modules" / "ws" / "package.json").exists():
        return
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


def test_the_sdk_passes_its_node_tests_against_real_servers() -> None:
    node = _need("node")
    _install(_need("npm"))
    files = sorted(str(p.relative_to(ROOT)) for p in JS.glob("*.test.mjs"))
    assert len(files) >= 2, files
    done = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        cwd=ROOT,
        env={**os.environ, "FANOUT_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    out = done.stdout
    summary = dict(re.findall(r"^# (tests|pass|fail|cancelled|skipped) (\d+)$", out, re.M))
    assert done.returncode == 0, f"{summary}\n{out[-6000:]}\n{done.stderr[-3000:]}"
    assert summary.get("fail") == "0" and summary.get("cancelled") == "0", summary
    assert int(summary["pass"]) >= 15, summary
    # A skip is allowed only where the server said 404 "not available" for the op.
    skips = re.findall(r"^\s*ok \d+ - (.*?) # SKIP (.*)$", out, re.M)
    for name, reason in skips:
        assert any(name.startswith(p) for p in MAY_SKIP), (name, reason)
        assert "not available" in reason, (name, reason)
    assert int(summary["skipped"]) == len(skips), summary


def test_the_server_serves_the_sdk_and_its_types() -> None:
    server = ServerProcess().start()
    try:
        js = httpx.get(f"{server.base}/sdk/fanout.js", timeout=5)
        assert js.status_code == 200
        assert js.headers["content-type"].startswith("text/javascript")
        # Importable from pages of other origins (module scripts are fetched with CORS).
        assert js.headers["access-control-allow-origin"] == "*"
        assert js.content == SDK.read_bytes()
        types = httpx.get(f"{server.base}/sdk/fanout.d.ts", timeout=5)
        assert types.status_code == 200
        assert "export class Fanout" in types.text
    finally:
        server.stop()
