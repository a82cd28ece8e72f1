"""Reading a server's /metrics the way Prometheus would, with prometheus-client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import ServerProcess


async def scrape(server: ServerProcess, headers: dict[str, str] | None = None) -> dict[str, Metric]:
    """/metrics parsed into families by name (a parse error fails the test)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(f"{server.base}/metrics", headers=headers)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def total(families: dict[str, Metric], sample: str, **labels: str) -> float:
    """The sum of ``sample``'s values over every worker, for samples with ``labels``."""
    family = families[_family_of(sample)]
    return sum(
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def workers_in(families: dict[str, Metric]) -> set[str]:
    """The ``worker`` label values of the uptime gauge: the workers the answer covers."""
    return {s.labels["worker"] for s in families["fanout_uptime_seconds"].samples}


def _family_of(sample: str) -> str:
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if sample.endswith(suffix):
            return sample[: -len(suffix)]
    return sample
