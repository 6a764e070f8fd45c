"""The chart's own files, read as they are: CRDs equal to the project's, values.yaml documented key by key,
templates named for what they hold, and a Grafana dashboard whose every query honours its variables."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from .helming import CHART, ROOT

DASHBOARD = CHART / "dashboards" / "spendmeter.json"
VARIABLES = ("namespace", "workload", "provider", "model")
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?:\s|$)")
_SELECTOR = re.compile(r"(spendmeter_\w+)\{([^}]*)\}")
_BARE_METRIC = re.compile(r"(spendmeter_\w+)(?![\w{])")


def test_chart_crds_are_the_projects_crds() -> None:
    ours = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    project = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    assert sorted(ours) == sorted(project)
    for name, content in project.items():
        assert ours[name] == content, f"charts/spendmeter/crds/{name} differs from crds/{name}: copy it over"


def _documented_keys(text: str) -> list[tuple[int, str, str]]:
    """(line number, key, the comment block above it) for every mapping key of values.yaml."""
    lines = text.splitlines()
    result = []
    for number, line in enumerate(lines):
        match = _KEY_LINE.match(line)
        if not match:
            continue
        comment: list[str] = []
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            comment.insert(0, lines[above].strip().lstrip("#").strip())
            above -= 1
        result.append((number + 1, match["key"], " ".join(comment)))
    return result


def test_every_value_is_documented_in_full_sentences() -> None:
    keys = _documented_keys((CHART / "values.yaml").read_text())
    assert len(keys) > 50
    undocumented = [f"line {n}: {key}" for n, key, comment in keys if not comment]
    assert not undocumented, f"keys with no comment above them: {undocumented}"
    for n, key, comment in keys:
        first_sentence = comment.split(". ")[0]
        assert re.search(rf"\b{re.escape(key)}\b", first_sentence), f"line {n}: the comment should name {key}"
        assert comment.endswith("."), f"line {n}: the comment on {key} is not a full sentence: {comment!r}"


def test_values_yaml_and_schema_agree_on_the_keys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if node.get("type") != "object" or "properties" not in node:
            return
        assert isinstance(value, dict), path
        assert set(value) == set(node["properties"]), (
            f"{path or 'top level'}: values.yaml and the schema differ"
        )
        for key, child in value.items():
            walk(child, node["properties"][key], f"{path}.{key}".lstrip("."))

    walk(values, schema, "")


def test_templates_hold_one_resource_each_named_component_kind() -> None:
    kinds = {
        "serviceaccount", "clusterrole", "clusterrolebinding", "deployment", "service", "secret", "issuer",
        "certificate", "mutatingwebhookconfiguration", "clusterkopfpeering", "podmonitor", "prometheusrule",
        "configmap",
    }  # fmt: skip
    for path in (CHART / "templates").glob("*.yaml"):
        component, _, kind = path.stem.partition("-")
        assert component and kind in kinds, f"{path.name} is not named <component>-<kind>.yaml"
        text = path.read_text()
        assert text.count("\nkind: ") + text.startswith("kind: ") == 1, (
            f"{path.name} holds more than one resource"
        )
        assert re.search(rf"^kind: (?i:{kind})$", text, re.MULTILINE), f"{path.name} does not hold a {kind}"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def test_dashboard_has_the_variables_and_a_datasource_choice() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in VARIABLES:
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"] and variables[name]["multi"]
        assert f", {name})" in variables[name]["definition"]


def test_dashboard_panels_are_laid_out_without_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]


@pytest.mark.parametrize("title, expr", _queries(json.loads(DASHBOARD.read_text())))
def test_every_dashboard_query_honours_every_variable(title: str, expr: str) -> None:
    assert not _BARE_METRIC.search(expr), f"{title}: a metric without a selector ignores the variables"
    selectors = _SELECTOR.findall(expr)
    assert selectors, title
    for metric, matchers in selectors:
        for name in VARIABLES:
            assert f'{name}=~"${name}"' in matchers, f"{title}: {metric} ignores ${name}"


def test_dashboard_covers_what_a_platform_team_asks() -> None:
    exprs = " ".join(expr for _, expr in _queries(_dashboard()))
    titles = " ".join(p["title"].lower() for p in _dashboard()["panels"])
    for metric in ("cost_usd", "tokens", "wasted_cost_usd", "unpriced_requests", "request_duration_seconds",
                   "time_to_first_token_seconds"):  # fmt: skip
        assert f"spendmeter_{metric}" in exprs
    for words in ("spend now", "per day", "per month", "by workload", "by namespace", "by model",
                  "by provider", "tokens by type", "cache hit", "wasted", "unpriced", "latency",
                  "first token", "top 10"):  # fmt: skip
        assert words in titles, f"no panel for {words!r}"
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.95," in exprs
