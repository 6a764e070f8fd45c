"""The effective price configuration: every PriceBook in the cluster, rendered into one file for the proxies.

The operator writes it into a ConfigMap in each namespace that has injected pods; the sidecar mounts it as
``/etc/spendmeter/prices/prices.yaml`` and reloads it when it changes. The file is a YAML stream of PriceBook
documents in the order they apply (later books override earlier ones: books are ordered by creation time,
then name), so the proxy's ``--prices`` reader takes it as it is and its errors name the book.

A book the CRD schema cannot catch (a regex that does not compile, an alias loop) is refused by
`spendmeter_proxy.pricebooks.parse_pricebook`, the same check the proxy makes; such a book gets a
``Ready=False`` condition with that message, and its last valid version stays in the file.
Pure: no I/O.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from spendmeter_proxy.pricebooks import API_VERSION, KIND, parse_pricebook

from spendmeter_operator import conditions

CONFIGMAP_KEY = "prices.yaml"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "spendmeter", "spendmeter.io/config": "prices"}
HEADER = "# The effective PriceBooks, in the order they apply; written by the spendmeter operator.\n"


@dataclass(frozen=True, slots=True)
class Book:
    """A PriceBook as the API holds it: what rendering and validation need."""

    name: str
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text)
    generation: int
    spec: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Book:
        meta = body.get("metadata") or {}
        return cls(
            name=str(meta["name"]),
            created=str(meta.get("creationTimestamp") or ""),
            generation=int(meta.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
        )


@dataclass(frozen=True, slots=True)
class Effective:
    """The books in force (with the spec in force for each) and the error of each book refused."""

    specs: tuple[tuple[str, Mapping[str, Any]], ...]
    errors: Mapping[str, str]


def validate(name: str, spec: Mapping[str, Any]) -> str | None:
    """None if the book is valid, else the reason it is not."""
    try:
        parse_pricebook(document(name, spec), f"pricebook:{name}")
    except ValueError as exc:
        return str(exc)
    return None


def effective(books: Iterable[Book], last_good: Mapping[str, Mapping[str, Any]]) -> Effective:
    """Valid books as they are; an invalid one as it last was when valid (left out if it never was)."""
    specs: list[tuple[str, Mapping[str, Any]]] = []
    errors: dict[str, str] = {}
    for book in sorted(books, key=lambda b: (b.created, b.name)):
        error = validate(book.name, book.spec)
        if error is None:
            specs.append((book.name, book.spec))
            continue
        errors[book.name] = error
        if book.name in last_good:
            specs.append((book.name, last_good[book.name]))
    return Effective(tuple(specs), errors)


def document(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": dict(spec)}


def render(specs: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """The price file: one PriceBook document per book, in order."""
    docs = [document(name, spec) for name, spec in specs]
    body = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False) if docs else ""
    return HEADER + body


def parse_rendered(text: str) -> dict[str, Mapping[str, Any]]:
    """The books in a price file this module rendered (to restore the last valid ones after a restart)."""
    books: dict[str, Mapping[str, Any]] = {}
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == KIND and isinstance(doc.get("metadata"), dict):
            books[str(doc["metadata"].get("name"))] = dict(doc.get("spec") or {})
    return books


def configmap(name: str, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    """The namespace's ConfigMap: ``prices.yaml`` and the other files the sidecars read (``budgets.yaml``)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_LABELS)},
        "data": dict(data),
    }


def condition(error: str | None, in_force: bool, generation: int, now: datetime.datetime) -> dict[str, Any]:
    """The book's ``Ready`` condition (Kubernetes condition conventions)."""
    if error is None:
        return conditions.condition("Ready", True, "Valid", "the book is valid and in force", generation, now)
    kept = "its last valid version stays in force" if in_force else "it has no valid version in force"
    return conditions.condition("Ready", False, "Invalid", f"{error}; {kept}", generation, now)
