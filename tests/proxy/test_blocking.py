"""Budget blocks: what a blocked app receives, and that nothing else is blocked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from flows import make_flow
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry
from spendmeter_proxy.addon import SpendMeter
from spendmeter_proxy.blocking import active_block, parse_blocks
from spendmeter_proxy.identity import Identity

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
MIDNIGHT = "2026-12-05T00:00:00Z"
BLOCK = {"budget": "shop/team-daily", "namespace": "shop", "workloads": ["chatbot"], "until": MIDNIGHT,
         "limitUsd": 50, "spentUsd": 51.2}  # fmt: skip
CHATBOT = Identity("chatbot", "Deployment", "shop", "chatbot-1")


def test_block_applies_to_its_workloads_until_the_window_rolls_over() -> None:
    (block,) = parse_blocks({"blocks": [BLOCK]}, "budgets.yaml")
    assert active_block([block], CHATBOT, NOW) is block
    assert active_block([block], Identity("indexer", "Deployment", "shop", "i-1"), NOW) is None
    assert active_block([block], Identity("chatbot", "Deployment", "other", "c-1"), NOW) is None
    assert active_block([block], CHATBOT, datetime(2026, 12, 5, tzinfo=UTC)) is None
    whole_ns = parse_blocks({"blocks": [{**BLOCK, "workloads": []}]}, "b")[0]
    assert active_block([whole_ns], Identity("indexer", "Deployment", "shop", "i-1"), NOW) is whole_ns


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"blocks": [{"namespace": "shop", "until": MIDNIGHT}]}, "'budget' and 'until' are required"),
        ({"blocks": [{**BLOCK, "until": "tomorrow"}]}, "blocks[0].until: not an ISO 8601 time"),
        ({"blocks": [{**BLOCK, "until": "2026-12-05T00:00:00"}]}, "needs a time zone"),
        ({"blocks": [{**BLOCK, "limit": 3}]}, "unknown field(s) limit"),
        ({"blocks": [{**BLOCK, "spentUsd": "lots"}]}, "blocks[0].spentUsd: not a number"),
        (["x"], "expected a mapping with a 'blocks' list"),
    ],
)
def test_bad_budget_files_are_rejected_with_the_place(doc: object, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_blocks(doc, "budgets.yaml")
    assert message in str(e.value) and "budgets.yaml" in str(e.value)


@pytest.fixture
def blocked(tmp_path: Path):
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(yaml.safe_dump({"blocks": [BLOCK]}))
    reg = CollectorRegistry()
    clock: dict[str, Any] = {"now": NOW, "monotonic": 100.0}
    addon = SpendMeter(reg, CHATBOT, clock=lambda: clock["monotonic"], wallclock=lambda: clock["now"])
    with taddons.context(addon) as tctx:
        tctx.configure(
            addon, spendmeter_budgets=[str(budgets)], spendmeter_receipts=str(tmp_path / "r.jsonl")
        )
        yield addon, reg, clock


def test_blocked_openai_call_gets_a_429_in_openai_shape(blocked) -> None:
    addon, reg, _ = blocked
    f = make_flow(CHAT)
    addon.request(f)
    assert f.response is not None and f.response.status_code == 429
    err = json.loads(f.response.content)["error"]
    assert err["code"] == "rate_limit_exceeded" and "shop/team-daily" in err["message"]
    assert "2026-12-05T00:00:00Z" in err["message"] and "$51.20 of $50.00" in err["message"]
    assert f.response.headers["retry-after"] == str(9 * 3600)
    assert f.response.headers["x-should-retry"] == "false"
    labels = {"workload": "chatbot", "workload_kind": "Deployment", "provider": "openai"}
    assert reg.get_sample_value("spendmeter_blocked_requests_total", labels) == 1


def test_blocked_anthropic_call_gets_anthropics_error_shape(blocked) -> None:
    addon, _, _ = blocked
    f = make_flow({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}, host="api.anthropic.com",
                  path="/v1/messages")  # fmt: skip
    addon.request(f)
    body = orjson.loads(f.response.content)
    assert f.response.status_code == 429
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"


def test_calls_flow_again_after_the_window_rolls_over(blocked) -> None:
    addon, _, clock = blocked
    clock["now"] = NOW + timedelta(hours=9, seconds=1)
    f = make_flow(CHAT)
    addon.request(f)
    assert f.response is None  # forwarded to the provider as usual


def test_non_llm_calls_are_never_blocked(blocked) -> None:
    addon, _, _ = blocked
    f = make_flow(b"", path="/v1/models")
    addon.request(f)
    assert f.response is None


def test_removing_the_block_unblocks(blocked, tmp_path: Path) -> None:
    addon, _, clock = blocked
    (tmp_path / "budgets.yaml").write_text("blocks: []\n")
    clock["monotonic"] += 1.5  # the once-a-second check for changed files is due
    f = make_flow(CHAT)
    addon.request(f)
    assert f.response is None
