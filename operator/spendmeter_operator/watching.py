"""The namespace labels the injection decides on, kept current by a watch of the cluster's namespaces.

Every admission needs the labels of the pod's namespace (``spendmeter.io/inject=enabled`` opts a whole
namespace in). Reading the namespace at each admission put a round trip to the API server, through the
synchronous client in a worker thread, on every pod creation. `NamespaceLabels` keeps a copy instead: it
lists the namespaces, then follows their changes with a watch, in a thread of its own so that it runs in
every replica (each one answers admissions, leader or not; kopf pauses its own watches in replicas that do
not lead) and never competes with the event loop that answers the API server. A namespace the watch has
not delivered yet (one created a moment ago) is read from the API, as before.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kubernetes

logger = logging.getLogger(__name__)

LabelsFetcher = Callable[[str], Awaitable[Mapping[str, str]]]
"""``fetch(name)``: a namespace's labels read from the API (empty when it does not exist)."""


class NamespaceLabels:
    """Every namespace's labels by name, kept current by a list-then-watch in a daemon thread."""

    def __init__(self, api_client: Any, fetch: LabelsFetcher, *, watch_seconds: int = 300) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._fetch = fetch
        self._watch_seconds = watch_seconds
        self._labels: dict[str, dict[str, str]] = {}
        self._stopping = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()  # set once the first listing is in
        self.misses = 0  # lookups the copy could not answer (read from the API instead)

    async def get(self, name: str) -> Mapping[str, str]:
        labels = self._labels.get(name)
        if labels is not None:
            return labels
        self.misses += 1
        return await self._fetch(name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="spendmeter-namespaces", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                self._follow()
                backoff = 1.0
            except Exception as exc:  # the API server restarting, a 410 Gone: list afresh after a pause
                if self._stopping.is_set():
                    return
                logger.warning("Watching namespaces failed (%s); listing them again in %.0fs.", exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _follow(self) -> None:
        listing = self._core.list_namespace(_request_timeout=30, _preload_content=False)
        doc = _json(listing)
        self._labels = {_name(ns): _labels_of(ns) for ns in doc.get("items") or ()}
        self.synced.set()
        self._watch = kubernetes.watch.Watch()
        events = self._watch.stream(
            self._core.list_namespace,
            resource_version=(doc.get("metadata") or {}).get("resourceVersion"),
            timeout_seconds=self._watch_seconds,
            _request_timeout=self._watch_seconds + 30,
            deserialize=False,
        )
        for event in events:
            ns = event.get("object") or {}
            if event.get("type") == "DELETED":
                self._labels.pop(_name(ns), None)
            elif event.get("type") in ("ADDED", "MODIFIED"):
                self._labels[_name(ns)] = _labels_of(ns)
            if self._stopping.is_set():
                return


def _json(response: Any) -> Any:
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def _name(ns: Mapping[str, Any]) -> str:
    return str((ns.get("metadata") or {}).get("name") or "")


def _labels_of(ns: Mapping[str, Any]) -> dict[str, str]:
    return dict((ns.get("metadata") or {}).get("labels") or {})
