"""The benchmark's client: the same httpx code for every setup, over keep-alive connections.

A `Target` says where chat calls go (a URL, and the HTTP proxy in front of it, if any). Each call is a
small OpenAI chat completion whose prompt carries a counter, so that no two bodies are the same (a
metering proxy sees distinct calls, as in real traffic, not one duplicate repeated).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from launching import MODEL

_counter = itertools.count()


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # the chat completions URL
    proxy: str | None = None  # an HTTP proxy URL, for absolute-form requests through it


@dataclass
class Tally:
    """Timings (seconds) of the calls that succeeded, and how many did not."""

    timings: list[float]
    errors: int = 0


def chat_body(stream: bool, max_tokens: int) -> dict[str, object]:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Reply with a short greeting, call {next(_counter)}."}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return body


def client(target: Target) -> httpx.AsyncClient:
    """One keep-alive connection, no proxy from the environment."""
    return httpx.AsyncClient(
        proxy=target.proxy,
        trust_env=False,
        timeout=60,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def call(http: httpx.AsyncClient, target: Target, max_tokens: int) -> float | None:
    """One non-streaming chat call; its duration, or None when it failed."""
    started = time.perf_counter()
    try:
        response = await http.post(target.url, json=chat_body(False, max_tokens))
    except httpx.HTTPError:
        return None
    elapsed = time.perf_counter() - started
    return elapsed if response.status_code == 200 and response.content else None


async def first_chunk(http: httpx.AsyncClient, target: Target, max_tokens: int) -> float | None:
    """One streaming chat call read to its end; the time until its first body bytes, or None."""
    started = time.perf_counter()
    first: float | None = None
    try:
        async with http.stream("POST", target.url, json=chat_body(True, max_tokens)) as response:
            async for chunk in response.aiter_raw():
                if chunk and first is None:
                    first = time.perf_counter() - started
            ok = response.status_code == 200
    except httpx.HTTPError:
        return None
    return first if ok else None


Call = Callable[[httpx.AsyncClient, Target, int], Awaitable[float | None]]


async def sequential(target: Target, fn: Call, count: int, warmup: int, max_tokens: int) -> Tally:
    """``warmup`` calls not counted, then ``count`` timed calls one after the other on one connection."""
    tally = Tally([])
    async with client(target) as http:
        for i in range(warmup + count):
            took = await fn(http, target, max_tokens)
            if i < warmup:
                continue
            if took is None:
                tally.errors += 1
            else:
                tally.timings.append(took)
    return tally


async def concurrent(
    target: Target, clients: int, max_tokens: int, duration_s: float | None = None, total: int | None = None
) -> tuple[int, int, float]:
    """``clients`` keep-alive clients calling back to back for ``duration_s`` or until ``total`` calls
    are made; (succeeded, failed, seconds elapsed)."""
    if (duration_s is None) == (total is None):
        raise ValueError("give either a duration or a total")
    counts = [0, 0]
    issued = itertools.count()
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else None

    async def worker() -> None:
        async with client(target) as http:
            while True:
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                if total is not None and next(issued) >= total:
                    return
                took = await call(http, target, max_tokens)
                counts[took is None] += 1

    await asyncio.gather(*(worker() for _ in range(clients)))
    return counts[0], counts[1], time.perf_counter() - started
