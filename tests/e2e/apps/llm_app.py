"""An application that calls LLM APIs with the official SDKs, exactly as an unmodified pod would.

The SDKs keep their default base URLs and HTTP clients; the only setup is what spendmeter's injection
gives a pod (``SSL_CERT_FILE`` pointing at the proxy's CA bundle) and the usual key variables. Run as
``python llm_app.py SCENARIO [JSON-ARGUMENTS]``; it prints one JSON object with what the app observed
(answers, response headers, chunks, errors, timings), for the end-to-end tests to check. Each SDK is
imported only by the scenarios that use it: importing both costs seconds a run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    import openai

Args = Mapping[str, Any]
SPENDMETER_PREFIX = "x-spendmeter-"


def spendmeter_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers if k.lower().startswith(SPENDMETER_PREFIX)}


def failure(error: BaseException) -> dict[str, Any]:
    """What the app sees of an error: its class and, for an SDK's HTTP error, the status and body."""
    seen: dict[str, Any] = {"error": type(error).__name__}
    response = getattr(error, "response", None)
    if isinstance(response, httpx2.Response) and hasattr(error, "status_code"):
        seen["status"] = response.status_code
        seen["body"] = response.text
    return seen


def chat_messages(args: Args) -> Any:  # the SDKs each have their own message types
    return [{"role": "user", "content": str(args.get("prompt", "Say hello."))}]


def openai_chat(args: Args) -> dict[str, Any]:
    """One chat completion; with ``repeat``, that many identical ones (``{"calls": [...]}``)."""
    import openai

    client = openai.OpenAI(max_retries=int(args.get("max_retries", 2)))
    if "repeat" in args:
        return {"calls": [chat_once(client, args) for _ in range(int(args["repeat"]))]}
    return chat_once(client, args)


def chat_once(client: openai.OpenAI, args: Args) -> dict[str, Any]:
    import openai

    try:
        raw = client.chat.completions.with_raw_response.create(
            model=args["model"],
            messages=chat_messages(args),
            extra_headers=args.get("headers"),
        )
        completion = raw.parse()
    except (openai.OpenAIError, ValueError) as e:  # a 200 whose body is no JSON fails in parse()
        return failure(e)
    usage = completion.usage
    return {
        "status": raw.status_code,
        "headers": spendmeter_headers(raw.headers.items()),
        "id": completion.id,
        "model": completion.model,
        "usage": usage.model_dump() if usage else None,
        "retries": raw.retries_taken,
    }


def stream_chunks(args: Args, client: openai.OpenAI, started: float) -> dict[str, Any]:
    """Reads one chat stream, noting every chunk as the app receives it."""
    import openai

    options: Any = {"include_usage": True} if args.get("include_usage") else openai.omit
    chunks: list[dict[str, Any]] = []
    first_at: float | None = None
    stop_after = args.get("stop_after")
    stream = client.chat.completions.create(
        model=args["model"],
        messages=chat_messages(args),
        stream=True,
        stream_options=options,
        max_tokens=args.get("max_tokens", openai.omit),
        extra_headers=args.get("headers"),
    )
    try:
        for chunk in stream:
            first_at = first_at if first_at is not None else time.monotonic() - started
            chunks.append(
                {
                    "choices": [c.model_dump(exclude_none=True) for c in chunk.choices],
                    "usage": chunk.usage.model_dump() if chunk.usage else None,
                    "x_spendmeter": (chunk.model_extra or {}).get("x_spendmeter"),
                }
            )
            if stop_after is not None and len(chunks) >= stop_after:
                break
    finally:
        stream.close()  # hangs up on the server when the loop stopped early
    return {"chunks": chunks, "first_chunk_s": first_at, "end_s": time.monotonic() - started}


def openai_stream(args: Args) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(max_retries=0)
    if args.get("warm_up"):  # opens the connection first, so the timed call measures only the stream
        client.embeddings.create(model="text-embedding-3-small", input="warm up")
    started = time.monotonic()
    try:
        seen = stream_chunks(args, client, started)
    except (openai.OpenAIError, httpx2.HTTPError) as e:
        return failure(e)
    if args.get("then_chat"):
        seen["next"] = openai_chat({**args, "prompt": args["then_chat"]})
    return seen


def openai_models(args: Args) -> dict[str, Any]:
    import openai

    try:
        page = openai.OpenAI(max_retries=0).models.list()
    except openai.OpenAIError as e:
        return failure(e)
    return {"models": [m.id for m in page.data]}


def anthropic_message(args: Args) -> dict[str, Any]:
    import anthropic

    client = anthropic.Anthropic(max_retries=0)
    try:
        raw = client.messages.with_raw_response.create(
            model=args["model"],
            max_tokens=256,
            messages=chat_messages(args),
            extra_headers=args.get("headers"),
        )
        message = raw.parse()
    except anthropic.AnthropicError as e:
        return failure(e)
    return {
        "status": raw.status_code,
        "headers": spendmeter_headers(raw.headers.items()),
        "model": message.model,
        "usage": message.usage.model_dump(),
    }


def anthropic_stream(args: Args) -> dict[str, Any]:
    import anthropic

    client = anthropic.Anthropic(max_retries=0)
    events: list[str] = []
    try:
        stream = client.messages.create(
            model=args["model"],
            max_tokens=256,
            messages=chat_messages(args),
            stream=True,
            extra_headers=args.get("headers"),
        )
        with stream:
            events.extend(event.type for event in stream)
    except (anthropic.AnthropicError, httpx2.HTTPError) as e:
        return {**failure(e), "events": events}
    return {"events": events}


def raw_post(args: Args) -> dict[str, Any]:
    """A POST of exactly these bytes (``body_hex``) with a plain HTTP client, over HTTP/1.1 or HTTP/2."""
    with httpx2.Client(http2=bool(args.get("http2")), timeout=60) as client:
        response = client.post(
            args["url"],
            content=bytes.fromhex(args["body_hex"]),
            headers={"content-type": "application/json", **args.get("headers", {})},
        )
    return {
        "status": response.status_code,
        "http_version": response.http_version,
        "headers": spendmeter_headers(response.headers.items()),
        "body_hex": response.content.hex(),
    }


def big_chat(args: Args) -> dict[str, Any]:
    return openai_chat({**args, "prompt": "x" * int(args["size"])})


def websocket_echo(args: Args) -> dict[str, Any]:
    from httpx2.websockets import WebSocketClient

    with httpx2.Client() as client, WebSocketClient(client).connect(args["url"]) as ws:
        replies = []
        for text in args["messages"]:
            ws.send_text(text)
            replies.append(ws.receive_text())
    return {"replies": replies}


SCENARIOS: dict[str, Callable[[Args], dict[str, Any]]] = {
    "openai_chat": openai_chat,
    "openai_stream": openai_stream,
    "openai_models": openai_models,
    "anthropic_message": anthropic_message,
    "anthropic_stream": anthropic_stream,
    "raw_post": raw_post,
    "big_chat": big_chat,
    "websocket_echo": websocket_echo,
}


def main(argv: list[str]) -> int:
    args = json.loads(argv[2]) if len(argv) > 2 else {}
    print(json.dumps(SCENARIOS[argv[1]](args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
