"""Prometheus alert rules and Grafana dashboards, checked against the code and the runbook.

The rules' structure is checked (groups, names, for/labels/annotations with a summary and a
runbook link that exists in docs/OPERATIONS.md), every query is parsed by a real PromQL parser
(promql-parser), and every metric a query names must be registered somewhere in the packages'
source: a dashboard never shows a series nobody exports.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "ops" / "grafana").glob("*.json"))
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
SOURCES = sorted([*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")])

# The metric names the issue and the product README promise (exposition names).
REQUIRED_METRICS = (
    "des_retrievals_total",
    "des_retrieval_seconds",
    "des_s3_range_calls_total",
    "des_index_cache_hits_total",
    "des_index_cache_misses_total",
    "des_index_cache_bytes",
    "des_bytes_served_total",
    "des_s3_source_reads_total",
    "des_s3_source_read_seconds",
    "des_s3_source_bytes_downloaded",
    "des_migration_cycles_total",
    "des_migration_files_total",
    "des_migration_bytes_total",
    "des_migration_duration_seconds",
    "des_migration_pending_files",
    "des_migration_batch_size",
)
# Series Prometheus makes itself, not the code.
PROMETHEUS_SERIES = {"up"}
SEVERITIES = {"page", "ticket"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
RUNBOOK_PREFIX = "https://github.com/your-org/des/blob/main/docs/OPERATIONS.md#"
# Grafana's own variables, replaced by values before a query is parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$backend": ".*"}


# ------------------------------------------------------------------------------------ helpers


def parse_promql(expr: str) -> Any:
    return promql_parser.parse(expr)


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects, found by walking its syntax tree."""
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)
        return True

    promql_parser.walk(parse_promql(expr), visit)
    return names


def code_names(name: str) -> tuple[str, ...]:
    """How a metric's exposition name can be spelled where the code registers it.

    prometheus-client adds ``_total`` to counters (and accepts the name with or without it),
    and a histogram ``x`` is exposed as ``x_bucket``, ``x_sum`` and ``x_count``.
    """
    spellings = [name]
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix):
            spellings.append(name.removesuffix(suffix))
    return tuple(spellings)


@cache
def source_text() -> str:
    return "\n".join(path.read_text() for path in SOURCES)


def registered_in_code(name: str) -> bool:
    text = source_text()
    return any(re.search(rf"[\"']{re.escape(s)}[\"']", text) for s in code_names(name))


def load_rules() -> dict[str, Any]:
    data = yaml.safe_load(ALERTS.read_text())
    assert isinstance(data, dict)
    return data


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"]]


def load_dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append(expr)
    return queries


def all_queries() -> list[str]:
    return [rule["expr"] for rule in all_rules()] + [
        q for path in DASHBOARDS for q in dashboard_queries(load_dashboard(path))
    ]


def operations_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings (lower case, spaces to hyphens)."""
    anchors = set()
    for line in OPERATIONS.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


# ------------------------------------------------------------------------------ alert rules


def test_rule_groups_and_alert_names() -> None:
    groups = load_rules()["groups"]
    assert [g["name"] for g in groups] == ["des-retrieval", "des-migration"]
    names = [rule["alert"] for rule in all_rules()]
    assert len(names) == len(set(names)), "alert names are unique"
    assert names == [
        "DesHttpDown",
        "DesRetrievalErrorRateHigh",
        "DesRetrievalNotFoundRateHigh",
        "DesRetrievalLatencyHigh",
        "DesS3CallsPerReadHigh",
        "DesIndexCacheHitRatioLow",
        "DesStoreLayoutChanged",
        "DesS3SourceReadErrors",
        "DesMigrationNotRunning",
        "DesMigrationCycleFailed",
        "DesMigrationFilesFailing",
        "DesMigrationBacklogGrowing",
        "DesMigrationLagHigh",
        "DesMigrationCycleSlow",
    ]


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r["alert"])
def test_rule_has_for_labels_and_annotations(rule: dict[str, Any]) -> None:
    assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
    assert re.fullmatch(r"Des[A-Z][A-Za-z0-9]+", rule["alert"])
    assert DURATION.match(rule["for"]), rule["for"]
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["labels"]["service"] in {"des-http", "des-packer", "des-migrate"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    for text in annotations.values():
        assert text.count("{{") == text.count("}}"), "balanced template actions"


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r["alert"])
def test_rule_runbook_points_at_its_section_of_operations_md(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    assert url == RUNBOOK_PREFIX + rule["alert"].lower()
    assert rule["alert"].lower() in operations_anchors()


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r["alert"])
def test_rule_expression_is_valid_promql(rule: dict[str, Any]) -> None:
    expr = parse_promql(rule["expr"])
    # An alert fires on a comparison or on absence, never on a bare value.
    assert isinstance(expr, promql_parser.BinaryExpr | promql_parser.Call)
    if isinstance(expr, promql_parser.Call):
        assert expr.func.name.startswith("absent")


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("sum(rate(des_retrievals_total[5m])", "unclosed left parenthesis"),
        ('rate(des_retrievals_total{status="5xx"[5m])', "unexpected character inside braces"),
        ("rate(des_retrievals_total[5x])", "bad number or duration syntax: 5x"),
        ("histogram_quantile(0.99 sum(rate(x[5m])))", "invalid promql query"),
        ("rate(des_retrievals_total[5m]) >", "invalid promql query"),
    ],
)
def test_the_parser_rejects_broken_queries(expr: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_promql(expr)


# ---------------------------------------------------------------------------------- dashboards


def test_there_is_a_retrieval_and_a_migration_dashboard() -> None:
    assert [p.name for p in DASHBOARDS] == ["des-migration.json", "des-retrieval.json"]
    uids = [load_dashboard(p)["uid"] for p in DASHBOARDS]
    assert uids == ["des-migration", "des-retrieval"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["title"].startswith("DES ")
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["title"].strip()
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
    for query in dashboard_queries(dashboard):
        assert "$" not in query, f"unknown variable in {query}"
        parse_promql(query)


def test_retrieval_dashboard_shows_errors_p99_calls_per_read_and_hit_ratio() -> None:
    dashboard = load_dashboard(ROOT / "ops" / "grafana" / "des-retrieval.json")
    titles = {p["title"]: p for p in dashboard["panels"]}
    expr = {t: " ".join(x["expr"] for x in p["targets"]) for t, p in titles.items()}
    assert 'status=~"5.."' in expr["5xx error ratio"]
    assert "histogram_quantile(0.99" in expr["Retrieval latency p50 / p99"]
    assert "des_s3_range_calls_total" in expr["Object-store requests per file served"]
    assert "des_index_cache_misses_total" in expr["Index cache hit ratio"]


def test_migration_dashboard_shows_lag_failures_and_pending_growth() -> None:
    dashboard = load_dashboard(ROOT / "ops" / "grafana" / "des-migration.json")
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "Pending files",
        "Hours to drain the backlog",
        "Pending files over time",
        "Cycles by outcome",
        "Failed files by step",
    } <= titles


# ------------------------------------------------------------------- metrics exist in the code


def test_metric_names_are_found_in_queries() -> None:
    assert metric_names(
        'sum(rate(a_total{x="1"}[5m])) / on() absent_over_time(b[1h]) and {__name__="c"}'
    ) == {"a_total", "b", "c"}


def test_code_search_finds_counters_and_histograms_under_their_registered_names() -> None:
    assert code_names("des_retrieval_seconds_bucket") == (
        "des_retrieval_seconds_bucket",
        "des_retrieval_seconds",
    )
    assert code_names("des_retrievals_total") == ("des_retrievals_total", "des_retrievals")
    assert not registered_in_code("des_no_such_metric_total")


def test_every_required_metric_is_on_a_dashboard_or_in_an_alert() -> None:
    used = set().union(*(metric_names(q) for q in all_queries()))
    exposed = {s for name in used for s in code_names(name)}
    assert [m for m in REQUIRED_METRICS if m not in exposed] == []


def test_every_required_metric_is_registered_in_the_code() -> None:
    missing = [name for name in REQUIRED_METRICS if not registered_in_code(name)]
    assert missing == [], f"metrics not registered in packages/*/src or services/*/src: {missing}"


def test_every_metric_the_rules_and_dashboards_name_is_registered_in_the_code() -> None:
    used = set().union(*(metric_names(q) for q in all_queries())) - PROMETHEUS_SERIES
    missing = sorted(name for name in used if not registered_in_code(name))
    assert missing == [], f"queried but not registered in the code: {missing}"
