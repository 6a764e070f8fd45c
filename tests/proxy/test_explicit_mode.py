"""Explicit mode (HTTPS_PROXY) with one long-lived SDK client, as an app in a pod without NET_ADMIN runs it."""

from __future__ import annotations

import json
from pathlib import Path

from spendmeter_proxy.demo import running_proxy, sdk_clients
from spendmeter_proxy.standin import StandIn


def test_one_client_many_calls_then_a_stream(tmp_path: Path) -> None:
    with StandIn(tls_dir=tmp_path / "provider-tls") as standin, running_proxy(tmp_path, standin) as (port, _):
        client, _anthropic = sdk_clients(port, tmp_path / "ca")
        client = client.with_options(timeout=20, max_retries=0)
        question = [{"role": "user", "content": "hi"}]
        for _ in range(6):  # keep-alive: every call after the first reuses the tunnel and its upstream
            client.chat.completions.create(model="gpt-4o", messages=question)
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=question, stream=True))
        assert chunks and all(c.usage is None for c in chunks)
        seen = len(standin.requests)
    receipts = [json.loads(line) for line in (tmp_path / "receipts.jsonl").read_text().splitlines()]
    assert seen == len(receipts) == 7
    assert [r["duplicate"] for r in receipts] == [False, True, True, True, True, True, False]
    assert receipts[-1]["stream"] and receipts[-1]["input_tokens"] > 0
