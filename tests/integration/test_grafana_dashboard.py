"""The Grafana dashboard (`deploy/grafana/gateway.json`) asks only for what a live gateway exports.

A gateway of two workers, in front of fake vLLMs, serves a JSON chat, a stream, embeddings and a
few failures: a route whose first replica refuses connections (a replica error, an ejection, a
retry), an upstream 500, an unknown model key, and a rate limiter whose Redis key has the wrong
type (a Redis error and a fallback). Every family then has samples, and every query of the
dashboard is checked against that scrape: each metric it names is a sample name there, and each
label it selects or groups by is a label of that metric's samples.

The PromQL reader below is small on purpose: it knows selectors, ranges, functions, aggregations
with `by`/`without`, arithmetic, comparisons and `or`/`and`/`unless`, and refuses what it does
not know (vector matching with `on`/`ignoring`, functions it has not been told of), so that a
query it cannot check fails the test instead of passing unchecked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from tests.procs import ROOT, FakeVLLM, Gateway, RedisServer, free_port

DASHBOARD = ROOT / "deploy" / "grafana" / "gateway.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Prometheus attaches these to every series it scrapes: they are on no sample of /metrics.
SCRAPE_LABELS = frozenset({"instance", "job"})
# What the issue asks the dashboard to show, as the sample names that show it.
ISSUE_FAMILIES = {
    "requests": "gateway_requests_total",
    "errors": "gateway_upstream_errors_total",
    "latency": "gateway_request_duration_seconds_bucket",
    "upstream latency": "gateway_upstream_duration_seconds_bucket",
    "time to first token": "gateway_stream_first_chunk_seconds_bucket",
    "streams open": "gateway_active_streams",
    "replica ejections": "gateway_replica_ejections_total",
    "replicas in flight": "gateway_replica_in_flight",
    "redis fallbacks": "gateway_redis_fallbacks_total",
}

# ---------------------------------------------------------------------------- reading PromQL

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<duration>\d+(?:ms|[smhdwy])\b)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){},])
    """,
    re.VERBOSE,
)
AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile"}
)
FUNCTIONS = frozenset(
    {
        "rate",
        "irate",
        "increase",
        "delta",
        "deriv",
        "changes",
        "resets",
        "histogram_quantile",
        "abs",
        "ceil",
        "floor",
        "round",
        "clamp",
        "clamp_min",
        "clamp_max",
        "scalar",
        "vector",
        "sort",
        "sort_desc",
        "time",
        "absent",
        "avg_over_time",
        "max_over_time",
        "min_over_time",
        "sum_over_time",
        "last_over_time",
    }
)
BINARY_KEYWORDS = frozenset({"and", "or", "unless", "bool"})
UNSUPPORTED = frozenset({"on", "ignoring", "group_left", "group_right", "offset", "count_values"})
MATCHERS = frozenset({"=", "!=", "=~", "!~"})


@dataclass(frozen=True)
class Selector:
    """A series selector of a query, with every label the query needs its samples to carry."""

    metric: str
    labels: frozenset[str]


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read {expr[position:]!r} in {expr!r}")
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
    return tokens


def _matching_parens(tokens: list[tuple[str, str]], expr: str) -> dict[int, int]:
    pairs, open_at = {}, []
    for index, (_, text) in enumerate(tokens):
        if text == "(":
            open_at.append(index)
        elif text == ")":
            if not open_at:
                raise ValueError(f"unbalanced ')' in {expr!r}")
            start = open_at.pop()
            pairs[start], pairs[index] = index, start
    if open_at:
        raise ValueError(f"unbalanced '(' in {expr!r}")
    return pairs


def selectors(expr: str) -> list[Selector]:
    """Every series selector of `expr`, with its matchers' labels and the grouping labels of the
    aggregations around it."""
    tokens = tokenize(expr)
    parens = _matching_parens(tokens, expr)
    found: list[tuple[int, str, set[str]]] = []  # (token index, metric, labels)
    groupings: list[tuple[int, int, set[str]]] = []  # (first, last token index of the argument, labels)
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else None
        if kind == "op" and text == "{":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        if kind != "ident":
            index += 1
            continue
        if text in UNSUPPORTED:
            raise ValueError(f"{text!r} is not supported by this checker, in {expr!r}")
        if text in ("by", "without"):
            if following != "(":
                raise ValueError(f"{text} without a label list in {expr!r}")
            close = parens[index + 1]
            labels = {t for k, t in tokens[index + 2 : close] if k == "ident"}
            if index > 0 and tokens[index - 1][1] in AGGREGATIONS:  # sum by (x) (argument)
                start = close + 1
                if start >= len(tokens) or tokens[start][1] != "(":
                    raise ValueError(f"an aggregation without its argument in {expr!r}")
                groupings.append((start, parens[start], labels))
            elif index > 0 and tokens[index - 1][1] == ")":  # sum (argument) by (x)
                start = parens[index - 1]
                if start == 0 or tokens[start - 1][1] not in AGGREGATIONS:
                    raise ValueError(f"{text} after something other than an aggregation in {expr!r}")
                groupings.append((start, index - 1, labels))
            else:
                raise ValueError(f"{text} after something other than an aggregation in {expr!r}")
            index = close + 1
            continue
        if text in BINARY_KEYWORDS:
            index += 1
            continue
        if text in AGGREGATIONS and following in ("(", "by", "without"):
            index += 1
            continue
        if following == "(":
            if text not in FUNCTIONS:
                raise ValueError(f"unknown function {text!r} in {expr!r}")
            index += 1
            continue
        labels = set()  # a metric name
        end = index + 1
        if following == "{":
            end = index + 2
            while end < len(tokens) and tokens[end][1] != "}":
                label_kind, label = tokens[end]
                if label_kind == "ident":
                    if tokens[end + 1 : end + 2] == [] or tokens[end + 1][1] not in MATCHERS:
                        raise ValueError(f'a matcher that is not label op "value" in {expr!r}')
                    if tokens[end + 2 : end + 3] == [] or tokens[end + 2][0] != "string":
                        raise ValueError(f'a matcher that is not label op "value" in {expr!r}')
                    labels.add(label)
                    end += 3
                elif label == ",":
                    end += 1
                else:
                    raise ValueError(f"cannot read the matchers of {text} in {expr!r}")
            if end == len(tokens):
                raise ValueError(f"unclosed matchers of {text} in {expr!r}")
            end += 1
        found.append((index, text, labels))
        index = end
    return [
        Selector(metric, frozenset(labels.union(*(g for first, last, g in groupings if first < at < last))))
        for at, metric, labels in found
    ]


def exported_labels(scrape: str) -> dict[str, set[str]]:
    """Sample name (`gateway_requests_total`, `..._bucket`) to the labels its samples carry."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def problems(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """What in `expr` the scrape does not have: metrics not exported, labels not on their samples."""
    found = []
    for selector in selectors(expr):
        if selector.metric not in exported:
            found.append(f"{selector.metric} is not exported")
            continue
        missing = selector.labels - exported[selector.metric] - SCRAPE_LABELS
        if missing:
            found.append(f"{selector.metric} has no label {', '.join(sorted(missing))}")
    return found


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.+),\s*(?P<label>\w+)\s*\)\s*$")


def variable_query(query: str) -> str:
    """A `label_values(selector, label)` variable query as the PromQL that it needs (`sum by
    (label) (selector)`), so that the checker sees the label."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values(...) query: {query!r}")
    return f"sum by ({match['label']}) ({match['expr']})"


# ---------------------------------------------------------------------------- the dashboard


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())  # the panels of a collapsed row


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every target and every query variable."""
    found = [
        (f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", ())
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            found.append((f"variable {variable['name']}", variable_query(query)))
    return found


# ---------------------------------------------------------------------------- unit checks

SCRAPE = """\
# TYPE gateway_requests_total counter
gateway_requests_total{endpoint="/v1/embeddings",method="POST",status="200"} 1.0
# TYPE gateway_request_duration_seconds histogram
gateway_request_duration_seconds_bucket{endpoint="/health",le="+Inf"} 1.0
gateway_request_duration_seconds_count{endpoint="/health"} 1.0
gateway_request_duration_seconds_sum{endpoint="/health"} 0.002
# TYPE gateway_active_streams gauge
gateway_active_streams 0.0
"""


def test_the_reader_finds_metrics_and_the_labels_that_each_needs() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(gateway_request_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))'
        " / online_users + sum(gateway_active_streams) by (instance) > bool 0 or vector(0)"
    )
    assert selectors(expr) == [
        Selector("gateway_request_duration_seconds_bucket", frozenset({"le", "endpoint", "instance"})),
        Selector("online_users", frozenset()),
        Selector("gateway_active_streams", frozenset({"instance"})),
    ]
    ratio = 'sum by (endpoint) (rate(a{status=~"5.."}[5m])) / sum(rate(b[5m]))'
    assert selectors(ratio) == [Selector("a", frozenset({"endpoint", "status"})), Selector("b", frozenset())]


def test_the_check_fails_on_a_metric_or_label_that_is_not_exported() -> None:
    exported = exported_labels(SCRAPE)
    assert problems('sum by (endpoint, status) (rate(gateway_requests_total{method="POST"}[5m]))', exported) == []
    assert problems("sum(rate(gateway_requests_totl[5m]))", exported) == ["gateway_requests_totl is not exported"]
    assert problems("sum(rate(gateway_request_duration_seconds[5m]))", exported) == [
        "gateway_request_duration_seconds is not exported"  # a family name is no series
    ]
    assert problems("sum by (route) (rate(gateway_requests_total[5m]))", exported) == [
        "gateway_requests_total has no label route"
    ]
    assert problems('gateway_active_streams{route="chat"}', exported) == ["gateway_active_streams has no label route"]
    assert problems("sum by (instance) (gateway_active_streams)", exported) == []  # Prometheus adds it
    assert problems("up", exported) == ["up is not exported"]  # only the gateway's own metrics


@pytest.mark.parametrize(
    "expr",
    [
        "a / on (route) b",  # vector matching: labels this reader cannot attribute
        "rat(a[5m])",  # a misspelt function
        'sum(rate({__name__="a"}[5m]))',
        "sum(rate(a[5m])",
        "a offset 5m",
        'a{b="c"',
        "a{b=}",
    ],
)
def test_the_reader_refuses_what_it_cannot_check(expr: str) -> None:
    with pytest.raises(ValueError):
        selectors(expr)


def test_variable_queries_are_checked_as_the_label_they_list() -> None:
    query = 'label_values(gateway_replica_in_flight{instance=~"$instance"}, route)'
    assert selectors(variable_query(query)) == [Selector("gateway_replica_in_flight", frozenset({"instance", "route"}))]


def test_the_dashboard_is_importable_and_every_panel_asks_the_chosen_prometheus() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    assert {"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}.items() <= dashboard["__inputs"][
        0
    ].items()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"  # what the import form fills in
    assert {"instance", "route"} <= variables.keys()
    for name in ("instance", "route"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DATASOURCE

    panels = list(all_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    with_queries = [panel for panel in panels if panel["type"] != "row"]
    assert len(with_queries) >= 20
    for panel in with_queries:
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel.get("description"), panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
    for row in (panel for panel in panels if panel["type"] == "row"):
        assert not row.get("targets")
    # No panel overlaps another on the 24-column grid.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']!r} overlaps another panel"
        cells |= covered
    # The import form's placeholder is used where it is filled in, nowhere else.
    assert DASHBOARD.read_text().count("${DS_PROMETHEUS}") == 2


# ---------------------------------------------------------------------------- against a live gateway

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
EMBED = {"model": "all-MiniLM-L6-v2", "input": "hello"}
REDIS_PREFIX = "dashboard:"


@pytest.fixture
def redis_with_a_bad_key() -> Iterator[RedisServer]:
    """A private Redis in which the rate limiter's key for 127.0.0.1 is a hash: every limited
    request gets an error from Redis and is served by the local limiter (an error and a fallback)."""
    redis = RedisServer()
    client = Redis.from_url(redis.url)
    client.hset(f"{REDIS_PREFIX}rl:{{127.0.0.1}}", "not", "a bucket")
    client.close()
    yield redis
    redis.stop()


@pytest.fixture
def session_upstream() -> Iterator[FakeVLLM]:
    fake = FakeVLLM("session-model")
    yield fake
    fake.stop()


def test_every_query_names_metrics_and_labels_that_the_gateway_exports(
    start_gateway: Callable[..., Gateway],
    chat_upstream: FakeVLLM,
    embed_upstream: FakeVLLM,
    redis_with_a_bad_key: RedisServer,
    session_upstream: FakeVLLM,
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: listed first, met first
    gateway = start_gateway(
        workers=2,
        MODEL_ROUTE_chat=f"{refused},{chat_upstream.url}",
        MODEL_ROUTE_embed=embed_upstream.url,
        # Two names of one server: a route whose policy has a choice to count.
        MODEL_ROUTE_sessions=f"{session_upstream.url},{session_upstream.url.replace('127.0.0.1', 'localhost')}",
        ROUTING_POLICY_sessions="session",
        MODEL_ROUTE_prefixed=f"{session_upstream.url},{session_upstream.url.replace('127.0.0.1', 'localhost')}",
        ROUTING_POLICY_prefixed="prefix",
        METRICS_PUBLIC="true",
        USE_REDIS="true",
        REDIS_URL=redis_with_a_bad_key.url,
        REDIS_PREFIX=REDIS_PREFIX,
        RATE_LIMIT_PER_MIN="100000",
    )
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200  # after a refused replica
        stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        with client.stream("POST", "/v1/chat/completions", json=stream) as response:
            assert response.status_code == 200
            assert b"data: [DONE]" in response.read()
        assert client.post("/v1/embeddings", json=EMBED).status_code == 200
        session_chat = {**CHAT, "model": "session-model"}
        headers = {"X-Session-ID": "conversation-1", "X-Model-Key": "sessions"}
        assert client.post("/v1/chat/completions", json=session_chat, headers=headers).status_code == 200
        long_chat = {**session_chat, "messages": [{"role": "user", "content": "A long question. " * 80}]}
        prefixed = {"X-Model-Key": "prefixed"}
        assert client.post("/v1/chat/completions", json=long_chat, headers=prefixed).status_code == 200
        assert client.post("/v1/embeddings", json={**EMBED, "fake": {"status": 500}}).status_code == 500
        assert client.post("/v1/chat/completions", json=CHAT, headers={"X-Model-Key": "nope"}).status_code == 404
        deadline = time.monotonic() + 10  # the placement reaches Redis at the worker's next flush (50 ms)
        while "gateway_prefix_index_updates_total{" not in (scrape := client.get("/metrics").text):
            assert time.monotonic() < deadline, "no prefix-index update was published"
            time.sleep(0.05)
    exported = exported_labels(scrape)

    dashboard = load_dashboard()
    checked = queries(dashboard)
    failures = [f"{where}: {problem}" for where, expr in checked for problem in problems(expr, exported)]
    assert not failures, "\n".join(failures) + f"\n\nexported: {sorted(exported)}"

    used = {selector.metric for _, expr in checked for selector in selectors(expr)}
    for what, sample in ISSUE_FAMILIES.items():
        assert sample in used, f"the dashboard shows no {what} ({sample})"
    # Every family the gateway exports is on the dashboard (a histogram by any of its samples).
    families = {family.name: family for family in text_string_to_metric_families(scrape)}
    unshown = sorted(
        name
        for name, family in families.items()
        if name.startswith("gateway_") and not {sample.name for sample in family.samples} & used
    )
    assert not unshown, f"families the dashboard does not show: {unshown}"
    assert len(families) >= 16  # every family had samples: the scrape above checked them all


def test_the_readme_names_every_metric_of_the_dashboard() -> None:
    """deploy/grafana/README.md lists the metrics of each row: they are the dashboard's."""
    readme = (DASHBOARD.parent / "README.md").read_text()
    used = {
        re.sub(r"_(bucket|sum|count)$", "", selector.metric)
        for _, expr in queries(load_dashboard())
        for selector in selectors(expr)
    }
    named = set(re.findall(r"gateway_\w+", readme))
    assert used == named, f"only on the dashboard: {sorted(used - named)}; only in the README: {sorted(named - used)}"
