"""A small client for Prometheus's HTTP API (instant queries), shared by budgets and reports.

Only the standard library: the operator image stays small, and errors come back as `QueryError` with
a message a person can act on (wrong URL, Prometheus down, a bad query).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime


class QueryError(RuntimeError):
    """Prometheus could not be asked, or refused the query."""


@dataclass(frozen=True, slots=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str, at: datetime | None = None) -> list[Sample]:
        """An instant query; the samples of its vector (NaN and infinite values left out)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                doc = json.load(response)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise QueryError(f"Prometheus at {self.url} refused the query ({e.code}): {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise QueryError(f"cannot reach Prometheus at {self.url}: {e}") from None
        if doc.get("status") != "success":
            raise QueryError(f"Prometheus query failed: {doc.get('error', doc)}")
        result = doc["data"]
        if result.get("resultType") == "scalar":
            return [Sample({}, float(result["result"][1]))]
        samples = []
        for item in result.get("result", []):
            value = float(item["value"][1])
            if math.isfinite(value):
                samples.append(Sample(dict(item["metric"]), value))
        return samples
