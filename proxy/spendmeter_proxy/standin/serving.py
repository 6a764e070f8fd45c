"""The stand-in's HTTP/1.1 server: asyncio, h11, keep-alive, TLS with a certificate per SNI name.

`StandIn` answers each request with, in order: the reply of the first scripted `Rule` that matches; the
recorded exchange named by a rule or by the ``x-standin-sample`` request header; the best-matching
recorded exchange; a synthetic answer (OpenAI chat and embeddings, Anthropic messages); or a 404 in
the provider's error shape. Stream answers go out event by event, each flushed, with a pause between
events. Every request is logged as a `Received` record (body hash only) that tests can read.

Use it from tests in a thread (`start_in_thread` / `stop`, or ``with StandIn(...) as s``) or from
asyncio (`start` / `close`); ``python -m spendmeter_proxy.standin`` runs it as a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import h11

from spendmeter_proxy.standin.codings import StreamEncoder, accepts
from spendmeter_proxy.standin.exchanges import Exchange
from spendmeter_proxy.standin.messages import Answer, Received, Request, parse_request
from spendmeter_proxy.standin.replay import ExchangeIndex, replay_answer
from spendmeter_proxy.standin.rules import Fault, Reply, Rule
from spendmeter_proxy.standin.synthesizing import (
    Caching,
    api_family,
    cacheable_prefix,
    can_synthesize,
    error_answer,
    is_anthropic_messages,
    synthesize,
)
from spendmeter_proxy.testca import CertificateAuthority

SAMPLE_HEADER = "x-standin-sample"
DEFAULT_CHUNK_DELAY_S = 0.005
PROVIDER_HOSTS = (
    "api.openai.com",
    "*.openai.azure.com",
    "*.services.ai.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "*-aiplatform.googleapis.com",
    "api.mistral.ai",
    "api.cohere.com",
    "api.cohere.ai",
    "api.groq.com",
    "api.deepseek.com",
    "api.x.ai",
    "openrouter.ai",
    "api.cerebras.ai",
    "api.together.xyz",
    "api.fireworks.ai",
    *(
        f"bedrock-runtime.{region}.amazonaws.com"
        for region in (
            "us-east-1",
            "us-east-2",
            "us-west-2",
            "eu-central-1",
            "eu-west-1",
            "eu-west-3",
            "ap-northeast-1",
            "ap-southeast-2",
        )
    ),
    "localhost",
    "127.0.0.1",
    "::1",
)
_READ_SIZE = 65536
_PROMPT_CACHE_SIZE = 4096


class _TLS:
    """Server TLS: a default certificate for every known provider host, and one more per unknown SNI name."""

    def __init__(self, directory: Path, names: Iterable[str]) -> None:
        self.ca = CertificateAuthority.load_or_create(directory)
        self.ca_path = directory / "ca.pem"
        self._names = list(dict.fromkeys(names))
        self._leaf_dir = Path(tempfile.mkdtemp(prefix="standin-leaves-"))
        self.context = self._context(self._names, "default")
        self._by_name: dict[str, ssl.SSLContext] = {}
        self.context.sni_callback = self._on_sni

    def _context(self, names: Sequence[str], label: str) -> ssl.SSLContext:
        issued = self.ca.issue(names)
        cert, key = self._leaf_dir / f"{label}.pem", self._leaf_dir / f"{label}-key.pem"
        cert.write_bytes(issued.chain_pem)
        key.write_bytes(issued.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(cert, key)
        return context

    def _covers(self, name: str) -> bool:
        for pattern in self._names:
            if pattern == name:
                return True
            if pattern.startswith("*") and "." in name:
                head, _, rest = name.partition(".")
                prefix, _, suffix = pattern.partition(".")
                if rest == suffix and head.endswith(prefix[1:]):
                    return True
        return False

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        if name is None or self._covers(name.lower()):
            return None
        name = name.lower()
        if name not in self._by_name:
            self._by_name[name] = self._context([name], f"sni-{len(self._by_name)}")
        sslobj.context = self._by_name[name]
        return None

    def close(self) -> None:
        for path in self._leaf_dir.iterdir():
            path.unlink()
        self._leaf_dir.rmdir()


class StandIn:
    """A local server that answers like the LLM providers (see the module docstring)."""

    def __init__(
        self,
        exchanges: Sequence[Exchange] = (),
        *,
        tls_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        chunk_delay_s: float = DEFAULT_CHUNK_DELAY_S,
        rules: Sequence[Rule] = (),
        names: Sequence[str] = (),
        synthesize: bool = True,
        log_size: int = 10_000,
    ) -> None:
        self.index = ExchangeIndex(exchanges)
        self.tls_dir = tls_dir
        self.host, self.port = host, port
        self.chunk_delay_s = chunk_delay_s
        self.synthesize = synthesize
        self._names = [*PROVIDER_HOSTS, *sorted(self.index.hosts), *names]
        self._rules: list[Rule] = list(rules)
        self._rules_lock = threading.Lock()
        self._log: deque[Received] = deque(maxlen=log_size)
        self._prompt_cache: OrderedDict[str, None] = OrderedDict()
        self._tls: _TLS | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- public API -----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        """Base URL to give a client, e.g. ``https://127.0.0.1:40123``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls_dir else 'http'}://{host}:{self.port}"

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate clients must trust (``<tls_dir>/ca.pem``), None in plain HTTP mode."""
        return None if self._tls is None else self._tls.ca_path

    def add_rule(self, rule: Rule) -> Rule:
        with self._rules_lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._rules_lock:
            self._rules.clear()

    @property
    def requests(self) -> list[Received]:
        """What the stand-in received so far, oldest first."""
        return list(self._log)

    def clear_requests(self) -> None:
        self._log.clear()

    async def start(self) -> tuple[str, int]:
        if self.tls_dir is not None:
            self._tls = _TLS(self.tls_dir, self._names)
        self._server = await asyncio.start_server(
            self._serve_connection,
            self.host,
            self.port,
            ssl=self._tls.context if self._tls else None,
            limit=_READ_SIZE,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.address

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None
        if self._tls is not None:
            self._tls.close()
            self._tls = None

    def start_in_thread(self) -> tuple[str, int]:
        """Start serving from a background thread; returns the (host, port) it listens on."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="standin", daemon=True)
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.start(), loop).result()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> StandIn:
        self.start_in_thread()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- choosing the answer --------------------------------------------------------------------

    def _reply_for(self, request: Request) -> Reply | None:
        with self._rules_lock:
            rules = list(self._rules)
        for rule in rules:
            reply = rule.take(request)
            if reply is not None:
                return reply
        return None

    def _caching(self, request: Request, reply: Reply | None) -> Caching:
        if reply is not None and reply.cached_tokens is not None:
            return Caching(read=reply.cached_tokens)
        prefix = cacheable_prefix(request)
        if prefix is None:
            return Caching()
        if prefix.key in self._prompt_cache:
            self._prompt_cache.move_to_end(prefix.key)
            return Caching(read=prefix.tokens)
        self._prompt_cache[prefix.key] = None
        if len(self._prompt_cache) > _PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        if not is_anthropic_messages(request):
            return Caching()
        return Caching(written=prefix.tokens, written_1h=prefix.tokens if prefix.ttl_1h else 0)

    def answer(self, request: Request, reply: Reply | None) -> Answer:
        """The answer to ``request`` given the scripted ``reply`` (None: no rule matched)."""
        family = api_family(request.host, request.route)
        sample_id = (reply.sample if reply else None) or request.header(SAMPLE_HEADER)
        if reply is not None and reply.status is not None and reply.status >= 400:
            answer = error_answer(family, reply.status, reply.message, reply.headers)
        elif sample_id:
            exchange = self.index.by_id.get(sample_id)
            answer = (
                replay_answer(exchange, request)
                if exchange
                else error_answer(family, 404, f"the stand-in has no recorded exchange {sample_id!r}")
            )
        elif (exchange := self.index.find(request)) is not None:
            answer = replay_answer(exchange, request)
        elif self.synthesize and can_synthesize(request):
            answer = synthesize(request, self._caching(request, reply), int(time.time()))
        else:
            what = f"{request.method} {request.path} (model {request.model!r}, stream {request.stream})"
            answer = error_answer(family, 404, f"the stand-in has no answer for {what}")
        if reply is not None and reply.headers and answer.source != "error":
            answer = Answer(
                answer.status, answer.headers + reply.headers, answer.pieces, answer.stream, answer.source
            )
        return answer

    # --- I/O ------------------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                body = bytearray()
                while True:
                    part = await self._next_event(conn, reader)
                    if isinstance(part, h11.Data):
                        body += part.data
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return
                headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
                request = parse_request(
                    event.method.decode(), event.target.decode("latin-1"), headers, bytes(body)
                )
                reply = self._reply_for(request)
                answer = self.answer(request, reply)
                self._log.append(Received.of(request, answer, time.time()))
                if not await self._send(conn, writer, request, answer, reply):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            with contextlib.suppress(Exception):
                writer.write(conn.send(h11.Response(status_code=e.error_status_hint, headers=[])))
                writer.write(conn.send(h11.EndOfMessage()))
        except (ConnectionError, ssl.SSLError, h11.LocalProtocolError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(_READ_SIZE))

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: Request,
        answer: Answer,
        reply: Reply | None,
    ) -> bool:
        """Send ``answer``; False when the connection was closed or reset on purpose."""
        fault = (reply.fault if reply else None) or Fault()
        delay = reply.chunk_delay_s if reply and reply.chunk_delay_s is not None else self.chunk_delay_s
        pieces = list(answer.pieces)
        truncated = fault.drop_last_events > 0
        if truncated:
            pieces = pieces[: max(0, len(pieces) - fault.drop_last_events)]
        headers = list(answer.headers)
        coding = reply.compress if reply else None
        encoder = (
            StreamEncoder(coding) if coding and accepts(request.header("accept-encoding"), coding) else None
        )
        if encoder is not None:
            headers.append(("content-encoding", encoder.coding))
            if answer.stream:
                pieces = [encoder.encode(p) for p in pieces]
                pieces.append(encoder.finish())
            else:
                pieces = [encoder.encode(b"".join(pieces)) + encoder.finish()]
        if not answer.stream:
            pieces = [b"".join(pieces)]
            headers.append(("content-length", str(len(pieces[0]))))
        if fault.first_byte_delay_s:
            await asyncio.sleep(fault.first_byte_delay_s)
        head = conn.send(h11.Response(status_code=answer.status, headers=headers))
        if not answer.stream and fault.reset_after_bytes is None and not truncated:
            writer.write(
                b"".join(
                    [
                        head or b"",
                        conn.send(h11.Data(data=pieces[0])) or b"",
                        conn.send(h11.EndOfMessage()) or b"",
                    ]
                )
            )
            await writer.drain()
            return True
        writer.write(head or b"")
        await writer.drain()
        sent = 0
        for i, piece in enumerate(pieces):
            if i and answer.stream and delay > 0:
                await asyncio.sleep(delay)
            if fault.reset_after_bytes is not None and sent + len(piece) > fault.reset_after_bytes:
                keep = piece[: fault.reset_after_bytes - sent]
                if keep:
                    writer.write(conn.send(h11.Data(data=keep)) or b"")
                    await writer.drain()
                _reset(writer)
                return False
            if piece:
                writer.write(conn.send(h11.Data(data=piece)) or b"")
                await writer.drain()
            sent += len(piece)
        if truncated and not fault.end_cleanly:
            writer.close()
            return False
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP reset (SO_LINGER 0), as a crashed server or middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
