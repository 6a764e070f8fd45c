"""The mitmproxy addon that meters LLM calls: the proxy's heart, and deliberately thin.

Hooks translate between mitmproxy flows and the pure parts: `routes` says whether a call is an LLM call and
how to read it, `parsing` reads usage from bodies and streams, `pricing` prices it, `waste` judges
duplicates and retries, `metrics` and `receipts` record it. Only LLM hosts are decrypted; every other TLS
connection passes through untouched (`tls_clienthello`).

The app's traffic always flows as it would without the proxy: every hook is guarded, and an exception in
metering is logged once per kind and counted in ``spendmeter_proxy_errors_total``, never raised.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import orjson
from mitmproxy import ctx, http, tls
from mitmproxy.addonmanager import Loader
from prometheus_client import CollectorRegistry

from spendmeter_proxy import parsing
from spendmeter_proxy._content import ContentDecoder
from spendmeter_proxy.blocking import Block, active_block, blocked_answer, load_blocks
from spendmeter_proxy.errorshapes import family_of
from spendmeter_proxy.identity import Identity
from spendmeter_proxy.metrics import Metrics
from spendmeter_proxy.pricewatching import PriceSource
from spendmeter_proxy.pricing import Price, format_usd
from spendmeter_proxy.receipts import Receipt, ReceiptWriter
from spendmeter_proxy.routes import HostTable, Route, parse_host_spec, route
from spendmeter_proxy.streaming import PassThroughTap, UsageRewriteTap
from spendmeter_proxy.usage import Reading
from spendmeter_proxy.waste import Verdict, WasteDetector, call_digest, parse_retry_count
from spendmeter_proxy.watching import WatchedFiles

logger = logging.getLogger(__name__)

META = "spendmeter"
# OpenAI-compatible providers known to honour stream_options.include_usage.
USAGE_INJECTABLE = frozenset(
    {
        "openai",
        "azure.ai.openai",
        "groq",
        "deepseek",
        "x_ai",
        "openrouter",
        "cerebras",
        "together_ai",
        "fireworks_ai",
        "vllm",
    }
)
HEADER_PREFIX = "x-spendmeter-"
F = TypeVar("F", bound=Callable[..., Any])


def status_class(code: int | None) -> str:
    if code is None:
        return "error"
    return f"{code // 100}xx" if 100 <= code < 600 else "error"


@dataclass
class Call:
    """What the addon keeps about one LLM call while it is under way."""

    route: Route
    request_id: str
    started: float
    digest: int
    verdict: Verdict
    injected_usage: bool = False
    tap: PassThroughTap | UsageRewriteTap | None = None
    done: bool = False


@dataclass(frozen=True)
class Outcome:
    """A finished call, priced: the common input of headers, metrics and receipts."""

    reading: Reading
    model: str
    price: Price | None
    cost: Decimal | None
    cost_status: str


class SpendMeter:
    """mitmproxy addon; see the module docstring."""

    def __init__(
        self,
        registry: CollectorRegistry,
        identity: Identity | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.identity = identity or Identity()
        self.wallclock = wallclock
        self.metrics = Metrics(registry, self.identity.metric_labels())
        self.clock = clock
        self.hosts = HostTable()
        # Defaults hold until `configure` reports an option changed from its default.
        self.prices = PriceSource([])
        self.blocks = self._budget_files([])
        self.receipts: ReceiptWriter | None = None
        self._config_checked = 0.0
        self.waste = WasteDetector()
        self._reported: set[str] = set()

    # -- options -------------------------------------------------------------------------------------------
    def load(self, loader: Loader) -> None:
        loader.add_option(
            "spendmeter_llm_hosts",
            Sequence[str],
            [],
            """
            Extra hosts to meter besides the built-in list of LLM providers, as HOST[:PORT]=PROVIDER[/API]:
            for example a self-hosted vLLM gateway, vllm.internal:8000=vllm. Wildcards like *.corp.example
            are allowed. Calls to these hosts are read as OpenAI-compatible unless an API is named.
            """,
        )
        loader.add_option(
            "spendmeter_prices",
            Sequence[str],
            [],
            """
            PriceBook YAML files merged in order over the built-in price table. Later files override
            earlier ones; the files are reloaded when they change (a ConfigMap update, for example).
            """,
        )
        loader.add_option(
            "spendmeter_budgets",
            Sequence[str],
            [],
            """
            Budget files written by the operator (budgets.yaml beside prices.yaml in the mounted
            configuration). While a SpendBudget with action block covers this workload, new LLM calls are
            answered with HTTP 429 in the provider's own error shape. Missing files mean no blocks.
            """,
        )
        loader.add_option(
            "spendmeter_receipts",
            str,
            "-",
            """
            Where to write one JSON receipt per LLM call: a file path, or - for standard output.
            Receipts hold counts and costs, never prompts, completions or credentials.
            """,
        )
        loader.add_option(
            "spendmeter_waste_window",
            float,
            600.0,
            """
            Seconds during which an identical call (same method, host, path and body) to one answered
            successfully counts as a duplicate, and a repeat of a failed one as a retry.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        if "spendmeter_llm_hosts" in updated:
            try:
                rules = [parse_host_spec(s) for s in ctx.options.spendmeter_llm_hosts]
            except ValueError as e:
                raise ValueError(f"spendmeter_llm_hosts: {e}") from e
            self.hosts = HostTable(rules)
        if "spendmeter_prices" in updated:
            self.prices = PriceSource([Path(p) for p in ctx.options.spendmeter_prices])
        if "spendmeter_budgets" in updated:
            self.blocks = self._budget_files([Path(p) for p in ctx.options.spendmeter_budgets])
        if "spendmeter_receipts" in updated:
            if self.receipts is not None:
                self.receipts.close()
            self.receipts = ReceiptWriter(ctx.options.spendmeter_receipts)
        if "spendmeter_waste_window" in updated:
            self.waste = WasteDetector(window=ctx.options.spendmeter_waste_window)

    @staticmethod
    def _budget_files(files: list[Path]) -> WatchedFiles[tuple[Block, ...]]:
        return WatchedFiles(files, load_blocks, what="budget file", keeps="budget blocks", missing_ok=True)

    def running(self) -> None:
        if self.receipts is None:
            self.receipts = ReceiptWriter(ctx.options.spendmeter_receipts)

    def done(self) -> None:
        if self.receipts is not None:
            self.receipts.close()

    # -- guarding ------------------------------------------------------------------------------------------
    def report_error(self, kind: str, exc: BaseException) -> None:
        """Counts an internal error; logs the first of each kind with its traceback."""
        self.metrics.errors.labels(kind=kind).inc()
        if kind not in self._reported:
            self._reported.add(kind)
            logger.error("spendmeter %s error (further ones are only counted)", kind, exc_info=exc)

    @staticmethod
    def guarded(kind: str) -> Callable[[F], F]:
        def wrap(fn: F) -> F:
            @functools.wraps(fn)
            def hook(self: SpendMeter, *args: Any) -> Any:
                try:
                    return fn(self, *args)
                except Exception as e:
                    self.report_error(kind, e)
                    return None

            return hook  # type: ignore[return-value]

        return wrap

    # -- hooks ---------------------------------------------------------------------------------------------
    @guarded("tls_clienthello")
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        server = data.context.server.address
        host = data.client_hello.sni or (server[0] if server else "")
        port = server[1] if server else 443
        if self.hosts.provider_for(host, port) is None:
            data.ignore_connection = True

    @guarded("request")
    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        host = flow.client_conn.sni or req.pretty_host  # the TLS name is exact and cheap to read
        rule = self.hosts.rule_for(host, req.port)
        if rule is None:
            return
        body = req.raw_content or b""
        encoding = req.headers.get("content-encoding")
        if encoding and body:
            body = req.get_content(strict=False) or b""
        r = route(rule.provider, req.method, req.path, body, dialect=rule.dialect)
        if r is None:
            return
        self._reload_config()
        if self.blocks.value and self._block(flow, r):
            return
        now = self.clock()
        digest = call_digest(req.method, host, req.path, body)
        verdict = self.waste.classify(digest, parse_retry_count(req.headers.fields), now)
        call = Call(r, request_id=uuid.uuid4().hex, started=now, digest=digest, verdict=verdict)
        flow.metadata[META] = call
        if (
            r.stream_requested
            and r.api in ("openai_chat", "openai_completions")
            and r.provider in USAGE_INJECTABLE
        ):
            call.injected_usage = self._ask_for_usage(req, body)

    def _block(self, flow: http.HTTPFlow, r: Route) -> bool:
        """Answers the call with a 429 when a budget blocks this workload; True when it did."""
        now = self.wallclock()
        block = active_block(self.blocks.value, self.identity, now)
        if block is None:
            return False
        status, headers, body = blocked_answer(block, family_of(r.provider, r.api), now)
        flow.response = http.Response.make(status, body, [(k.encode(), v.encode()) for k, v in headers])
        self.metrics.observe_blocked(provider=r.provider)
        return True

    @staticmethod
    def _ask_for_usage(req: http.Request, body: bytes) -> bool:
        """Adds stream_options.include_usage to a chat stream request that lacks it; True when it did."""
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(obj, dict):
            return False
        options = obj.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return False
        obj["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        req.set_content(orjson.dumps(obj))  # re-encodes per the request's content-encoding
        return True

    @guarded("responseheaders")
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call: Call | None = flow.metadata.get(META)
        resp = flow.response
        if resp is None:
            return
        if call is None:
            resp.stream = True  # not ours to read: forward it as it comes, never buffered
            return
        content_type = resp.headers.get("content-type")
        if not self._is_stream(call, resp.status_code, content_type):
            return
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        decoder = ContentDecoder(encoding) if encoding and encoding != "identity" else None
        rewrite = (
            call.route.api in ("openai_chat", "openai_completions")
            and call.route.provider in USAGE_INJECTABLE
            and "event-stream" in (content_type or "")
        )
        if rewrite:
            if decoder is not None:  # the client then receives the stream decoded
                del resp.headers["content-encoding"]
                resp.headers.pop("content-length", None)
            call.tap = UsageRewriteTap(
                parsing.new_meter(call.route, content_type),  # type: ignore[arg-type]
                decoder,
                self.report_error,
                drop_usage_chunk=call.injected_usage,
                annotate=functools.partial(self._annotation, call),
                clock=self.clock,
            )
        else:
            make_meter = functools.partial(parsing.new_meter, call.route, content_type)
            call.tap = PassThroughTap(make_meter, decoder, self.report_error, clock=self.clock)
        resp.stream = call.tap

    @staticmethod
    def _is_stream(call: Call, status: int, content_type: str | None) -> bool:
        """Whether to tap the body as it flows; a stream without a content type is recognised by the tap."""
        if content_type:
            return parsing.is_stream(content_type)
        return call.route.stream_requested and status < 300

    @guarded("response")
    def response(self, flow: http.HTTPFlow) -> None:
        call: Call | None = flow.metadata.get(META)
        resp = flow.response
        if call is None or resp is None or call.done:
            return
        reading = call.tap.reading() if call.tap is not None else self._read_body(call, resp)
        outcome = self._finish(flow, call, reading, resp.status_code)
        if call.tap is None:
            self._add_headers(resp, call, outcome)

    @guarded("error")
    def error(self, flow: http.HTTPFlow) -> None:
        call: Call | None = flow.metadata.get(META)
        if call is None or call.done:
            return
        tap, resp = call.tap, flow.response
        if tap is not None and tap.complete and resp is not None:
            # The app read the stream to its end marker and hung up before the last bytes (an SDK closing
            # the response after [DONE]): a whole answer, not an error.
            self._finish(flow, call, tap.reading(), resp.status_code)
            return
        reading = tap.reading() if tap is not None else Reading()
        reading.error = reading.error or (flow.error.msg if flow.error else "connection error")
        self._finish(flow, call, reading, None)

    # -- the pure-ish middle --------------------------------------------------------------------------------
    def _read_body(self, call: Call, resp: http.Response) -> Reading:
        body = resp.get_content(strict=False) or b""
        try:
            return parsing.parse_body(call.route, body, resp.headers.get("content-type"))
        except ValueError as e:
            if 200 <= resp.status_code < 300:
                self.report_error("unreadable_body", e)
            return Reading(error=f"unreadable body: {e}")

    def _price(self, call: Call, reading: Reading) -> Outcome:
        model = reading.model or call.route.requested_model or "unknown"
        if reading.usage is None:
            return Outcome(reading, model, None, None, "no-usage")
        price = self.prices.table.price(call.route.provider, model, reading.usage, reading.traffic_type)
        if price is None and reading.model and call.route.requested_model not in (None, reading.model):
            price = self.prices.table.price(
                call.route.provider, call.route.requested_model or "", reading.usage, reading.traffic_type
            )
        cost = price.cost_usd if price is not None else None
        if cost is None and reading.reported_cost_usd is not None:
            cost = Decimal(str(reading.reported_cost_usd))
        return Outcome(reading, model, price, cost, "priced" if cost is not None else "unpriced")

    def _reload_config(self) -> None:
        """Picks up changed price and budget files, checking at most once a second."""
        now = self.clock()
        if now - self._config_checked >= 1.0:
            self._config_checked = now
            self.prices.reload_if_changed()
            self.blocks.reload_if_changed()

    def _annotation(self, call: Call, reading: Reading) -> dict[str, object]:
        o = self._price(call, reading)
        return {
            "cost_usd": format_usd(o.cost) if o.cost is not None else None,
            "cost_status": o.cost_status,
            "model": o.model,
            "provider": call.route.provider,
            "request_id": call.request_id,
        }

    def _finish(self, flow: http.HTTPFlow, call: Call, reading: Reading, status: int | None) -> Outcome:
        call.done = True
        now = self.clock()
        outcome = self._price(call, reading)
        succeeded = status is not None and 200 <= status < 300 and reading.error is None
        self.waste.record(call.digest, succeeded, outcome.cost, now)
        provider = call.route.provider
        model = self.metrics.model(outcome.model)
        ttft = None
        if call.tap is not None and call.tap.first_chunk_at is not None:
            ttft = call.tap.first_chunk_at - call.started
        wasted: Decimal | None = None
        if call.verdict.duplicate and outcome.cost:
            wasted = outcome.cost
            self.metrics.observe_waste(
                provider=provider, model=model, reason="duplicate", cost_usd=float(wasted)
            )
        if call.verdict.retry:
            self.metrics.observe_retry(provider=provider, model=model)
            wasted = call.verdict.failed_cost_usd
            if wasted:
                self.metrics.observe_waste(
                    provider=provider, model=model, reason="retry", cost_usd=float(wasted)
                )
        self.metrics.observe_call(
            provider=provider,
            operation=call.route.operation,
            model=model,
            status=status_class(status),
            stream=call.tap is not None,
            usage=reading.usage,
            cost_usd=float(outcome.cost) if outcome.cost is not None else None,
            duration_s=now - call.started,
            ttft_s=ttft,
        )
        if self.receipts is not None:
            self.receipts.write(self._receipt(call, outcome, status, now, ttft, wasted))
        return outcome

    def _receipt(
        self,
        call: Call,
        o: Outcome,
        status: int | None,
        now: float,
        ttft: float | None,
        wasted: Decimal | None,
    ) -> Receipt:
        u = o.reading.usage
        return Receipt(
            time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            request_id=call.request_id,
            provider=call.route.provider,
            operation=call.route.operation,
            requested_model=call.route.requested_model,
            model=o.model,
            status=status,
            stream=call.tap is not None,
            input_tokens=u.input_tokens if u else 0,
            output_tokens=u.output_tokens if u else 0,
            cached_input_tokens=u.cached_input_tokens if u else 0,
            cache_write_tokens=u.cache_write_tokens if u else 0,
            reasoning_tokens=u.reasoning_tokens if u else 0,
            cost_usd=format_usd(o.cost) if o.cost is not None else None,
            cost_status=o.cost_status,
            price_source=o.price.source if o.price else ("provider" if o.cost is not None else None),
            provider_reported_cost_usd=o.reading.reported_cost_usd,
            duration_ms=round((now - call.started) * 1000, 3),
            time_to_first_token_ms=round(ttft * 1000, 3) if ttft is not None else None,
            duplicate=call.verdict.duplicate,
            retry=call.verdict.retry,
            wasted_cost_usd=format_usd(wasted) if wasted else None,
            error=o.reading.error,
            details=dict(o.reading.extras),
            workload=self.identity.workload,
            workload_kind=self.identity.workload_kind,
            namespace=self.identity.namespace,
            pod=self.identity.pod,
        )

    @staticmethod
    def _add_headers(resp: http.Response, call: Call, o: Outcome) -> None:
        """Adds the x-spendmeter-* headers (replacing any an upstream sent) in one pass over the fields."""
        added = [("cost-status", o.cost_status), ("model", o.model), ("provider", call.route.provider),
                 ("request-id", call.request_id)]  # fmt: skip
        if o.cost is not None:
            added.insert(0, ("cost-usd", format_usd(o.cost)))
        u = o.reading.usage
        if u is not None:
            added += [("input-tokens", str(u.input_tokens)), ("output-tokens", str(u.output_tokens)),
                      ("cached-input-tokens", str(u.cached_input_tokens)),
                      ("cache-write-tokens", str(u.cache_write_tokens)),
                      ("reasoning-tokens", str(u.reasoning_tokens))]  # fmt: skip
        prefix = HEADER_PREFIX.encode()
        kept = tuple(f for f in resp.headers.fields if not f[0].lower().startswith(prefix))
        resp.headers.fields = kept + tuple((prefix + k.encode(), v.encode()) for k, v in added)
