"""deploy/grafana-dashboard.json queries only what /metrics exports, by labels the metrics have.

The metric names come out of each panel's PromQL through a small tokenizer: identifiers that are
not functions, aggregations or keywords, outside strings, `[...]` ranges, label matchers and
grouping clauses. The names are checked against a real runtime's /metrics; the labels of `by
(...)` clauses and of `{...}` matchers against a `Metrics` with one observation in every family.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import MONEY, Metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json"
DATASOURCE_UID = "${datasource}"
FAMILIES = frozenset("""
    sora_requests_accepted sora_requests_refused sora_jobs_finished sora_provider_calls
    sora_provider_call_seconds sora_status_calls_per_job sora_slack_calls sora_slack_rate_limited
    sora_slack_call_seconds sora_ack_seconds sora_delivery_lateness_seconds sora_callbacks sora_takeovers
    sora_reserved_usd sora_charged_usd sora_released_usd sora_refunded_usd sora_jobs_in_flight sora_leases_held
""".split())

# PromQL's functions (case-sensitive), including the experimental ones
FUNCTIONS = frozenset("""
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
    deg delta deriv double_exponential_smoothing end exp floor first_over_time histogram_avg
    histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
    histogram_sum holt_winters hour idelta increase info irate label_join label_replace last_over_time
    limit_ratio limitk ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh
    sort sort_by_label sort_by_label_desc sort_desc sqrt start stddev_over_time stdvar_over_time
    sum_over_time tan tanh time timestamp ts_of_max_over_time ts_of_min_over_time vector year
""".split())
# aggregation operators: they take `by (...)` / `without (...)` (keywords: case-insensitive)
AGGREGATIONS = frozenset("""
    avg bottomk count count_values group limit_ratio limitk max min quantile stddev stdvar sum topk
""".split())
GROUPING = frozenset({"by", "without"})
MATCHING = frozenset({"on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"})

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![a-zA-Z0-9_:.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=@,:(){}\[\]])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokenize(expr: str) -> list[Token]:
    """PromQL's tokens, spaces and comments dropped (a Grafana variable is one token)."""
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"can't read {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup not in ("space", "comment"):
            tokens.append(Token(m.lastgroup or "", m.group()))
    return tokens


def _unquote(text: str) -> str:
    return text[1:-1] if text[0] == "`" else json.loads('"' + text[1:-1].replace("\\'", "'") + '"')


@dataclass
class Query:
    """What one PromQL expression reads."""

    metrics: set[str] = field(default_factory=set)
    # (metric, label) for every label matcher of a named selector
    matchers: set[tuple[str, str]] = field(default_factory=set)
    # (labels of a `by (...)` clause, metrics inside the aggregation's argument)
    groupings: list[tuple[tuple[str, ...], frozenset[str]]] = field(default_factory=list)


def parse(expr: str) -> Query:
    toks = tokenize(expr)
    n = len(toks)
    # each `(`'s matching `)`
    closing: dict[int, int] = {}
    stack: list[int] = []
    for i, t in enumerate(toks):
        if t.text == "(":
            stack.append(i)
        elif t.text == ")":
            if not stack:
                raise ValueError(f"unbalanced ')' in {expr!r}")
            closing[stack.pop()] = i
    if stack:
        raise ValueError(f"unbalanced '(' in {expr!r}")

    def is_(i: int, text: str) -> bool:
        return i < n and toks[i].text == text

    def label_list(i: int) -> tuple[tuple[str, ...], int]:
        """The labels of `( a, b )` starting at toks[i], and the index after it."""
        if not is_(i, "("):
            raise ValueError(f"expected a label list at {i} in {expr!r}")
        names = []
        for t in toks[i + 1:closing[i]]:
            if t.kind == "ident":
                names.append(t.text)
            elif t.kind == "string":
                names.append(_unquote(t.text))
            elif t.text != ",":
                raise ValueError(f"unexpected {t.text!r} in a label list of {expr!r}")
        return tuple(names), closing[i] + 1

    def selector(i: int) -> tuple[str | None, list[str], int]:
        """`{ label op "value", ... }` at toks[i]: a quoted metric name in it, its labels, the index after."""
        name, labels, j = None, [], i + 1
        while not is_(j, "}"):
            if j >= n:
                raise ValueError(f"unclosed '{{' in {expr!r}")
            t = toks[j]
            if t.text == ",":
                j += 1
                continue
            if t.kind == "string" and (is_(j + 1, ",") or is_(j + 1, "}")):  # {"a.metric", ...}
                name, j = _unquote(t.text), j + 1
                continue
            if t.kind not in ("ident", "string") or j + 2 >= n or toks[j + 1].text not in ("=", "!=", "=~", "!~") \
                    or toks[j + 2].kind not in ("string", "variable"):
                raise ValueError(f"unexpected {t.text!r} in a label matcher of {expr!r}")
            label = t.text if t.kind == "ident" else _unquote(t.text)
            if label == "__name__" and toks[j + 1].text == "=" and toks[j + 2].kind == "string":
                name = _unquote(toks[j + 2].text)
            else:
                labels.append(label)
            j += 3
        return name, labels, j + 1

    q = Query()
    at: list[tuple[int, str]] = []  # (token index, metric) of every selector
    aggregations: list[tuple[tuple[str, ...], int, int]] = []  # (by labels, argument's `(`, its `)`)
    i = 0
    while i < n:
        t = toks[i]
        if t.text == "[":  # a range or subquery: durations and variables, no names
            j = i + 1
            while not is_(j, "]"):
                if j >= n or toks[j].text in "[{(":
                    raise ValueError(f"unclosed '[' in {expr!r}")
                j += 1
            i = j + 1
        elif t.text == "]":
            raise ValueError(f"unbalanced ']' in {expr!r}")
        elif t.text == "{":  # a selector with no name before it: {__name__="x"} or {"x"}
            at_brace = i
            name, labels, i = selector(i)
            if name is None:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            q.metrics.add(name)
            q.matchers.update((name, label) for label in labels)
            at.append((at_brace, name))
        elif t.kind != "ident":
            i += 1
        elif t.text.lower() in GROUPING | MATCHING:
            if is_(i + 1, "("):
                _labels, i = label_list(i + 1)
            elif t.text.lower() in ("group_left", "group_right"):
                i += 1
            else:
                raise ValueError(f"{t.text} without its labels in {expr!r}")
        elif t.text.lower() in AGGREGATIONS and (is_(i + 1, "(") or i + 1 < n and toks[i + 1].text.lower() in GROUPING):
            by: tuple[str, ...] = ()
            j = i + 1
            if toks[j].text.lower() in GROUPING:  # sum by (a) (x)
                labels, j = label_list(j + 1)
                by = labels if toks[i + 1].text.lower() == "by" else ()
            if not is_(j, "("):
                raise ValueError(f"{t.text} without its argument in {expr!r}")
            end = closing[j]
            if end + 1 < n and toks[end + 1].text.lower() in GROUPING:  # sum (x) by (a)
                labels, _after = label_list(end + 2)
                by = labels if toks[end + 1].text.lower() == "by" else ()
            aggregations.append((by, j, end))
            i += 1
        elif t.text in FUNCTIONS:
            if not is_(i + 1, "("):
                raise ValueError(f"function {t.text} without '(' in {expr!r}")
            i += 1
        elif t.text.lower() in KEYWORDS:
            i += 1
        elif is_(i + 1, "("):
            raise ValueError(f"unknown function {t.text!r} in {expr!r}")
        else:  # a metric name
            name = t.text
            q.metrics.add(name)
            at.append((i, name))
            i += 1
            if is_(i, "{"):
                quoted, labels, i = selector(i)
                if quoted is not None:
                    raise ValueError(f"two metric names, {name} and {quoted}, in one selector of {expr!r}")
                q.matchers.update((name, label) for label in labels)
    for by, start, end in aggregations:
        if by:
            q.groupings.append((by, frozenset(m for idx, m in at if start < idx < end)))
    return q


# ---- the dashboard ---------------------------------------------------------------------------

def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels nested in collapsed rows included."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in panels:
            yield p
            yield from walk(p.get("panels") or [])
    return walk(dashboard.get("panels") or [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every panel target."""
    for p in all_panels(dashboard):
        for t in p.get("targets") or []:
            if "expr" in t:
                yield p.get("title", f"panel {p.get('id')}"), t["expr"]


def problems(dashboard: dict[str, Any], exported: set[str], labels: dict[str, set[str]]) -> list[str]:
    """What the dashboard asks of /metrics that it doesn't have: metrics not in `exported`, and
    labels (`by (...)`, matchers) not among `labels[metric]`."""
    out = []
    for title, expr in queries(dashboard):
        q = parse(expr)
        for name in sorted(q.metrics - exported):
            out.append(f"{title}: {name} is not exported ({expr})")
        for name, label in sorted(q.matchers):
            if name in exported and label not in labels.get(name, set()):
                out.append(f"{title}: {name} has no label {label!r} to match ({expr})")
        for by, names in q.groupings:
            for name in sorted(names & exported):
                for label in by:
                    if label not in labels.get(name, set()):
                        out.append(f"{title}: {name} has no label {label!r} to sum by ({expr})")
    return out


def exported_names(exposition: str) -> set[str]:
    """The sample names an exposition offers a query, series or not: a histogram X exports
    X_bucket, X_sum and X_count; a counter X_total (which the parser may call X) exports X_total."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        base = family.name
        if family.type == "counter":
            names.add(base if base.endswith("_total") else base + "_total")
        elif family.type == "histogram":
            names.update(base + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update((base, base + "_sum", base + "_count"))
        else:
            names.add(base)
        names.update(s.name for s in family.samples)
    return names


@cache
def label_names() -> dict[str, frozenset[str]]:
    """Each sample name's labels, from a `Metrics` with one observation in every family."""
    m = Metrics()
    for metric in vars(m).values():
        if isinstance(metric, (Counter, Histogram)):
            names = metric._labelnames  # how many label values `.labels()` wants
            child = metric.labels(*(["x"] * len(names))) if names else metric
            child.inc() if isinstance(metric, Counter) else child.observe(1.0)
    for what in MONEY:
        m.money_moved(what, "x", 1)
    out: dict[str, set[str]] = {}
    empty = []
    for family in text_string_to_metric_families(m.exposition().decode()):
        if not family.samples:
            empty.append(family.name)
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    assert not empty, f"families with no sample, so no labels known: {empty}"
    return {name: frozenset(ls) for name, ls in out.items()}


async def scraped_names(make_bot: Any) -> set[str]:
    bot = await make_bot()
    resp = await bot.http.get(bot.url.replace("/slack/events", "/metrics"))
    assert resp.status_code == 200, resp.text
    return exported_names(resp.text)


# ---- tests -----------------------------------------------------------------------------------

async def test_every_queried_metric_is_exported_with_the_labels_used(make_bot) -> None:
    exported = await scraped_names(make_bot)
    dashboard = load()
    used = set().union(*(parse(e).metrics for _t, e in queries(dashboard)))
    assert used, "no metric found in the dashboard's queries"
    assert all(name.startswith("sora_") for name in used), used
    assert problems(dashboard, exported, label_names()) == []
    # every family the dashboard was written for is on it
    families = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in used}
    assert families >= FAMILIES, sorted(FAMILIES - families)


async def test_a_bogus_metric_or_label_is_reported(make_bot) -> None:
    exported = await scraped_names(make_bot)
    dashboard = copy.deepcopy(load())
    collapsed = next(p for p in dashboard["panels"] if p["type"] == "row" and p.get("collapsed") and p["panels"])
    ds = {"type": "prometheus", "uid": DATASOURCE_UID}
    collapsed["panels"].append({
        "id": 999, "type": "timeseries", "title": "bogus", "datasource": ds,
        "targets": [
            {"refId": "A", "datasource": ds, "expr": "sum by (provider) (rate(sora_bogus_total[$__rate_interval]))"},
            {"refId": "B", "datasource": ds, "expr": "sum by (le, user) (rate(sora_ack_seconds_bucket[5m]))"},
            {"refId": "C", "datasource": ds, "expr": 'sum(rate(sora_slack_calls_total{channel="C1"}[5m]))'},
        ],
    })
    found = problems(dashboard, exported, label_names())
    assert len(found) == 3, found
    assert "sora_bogus_total is not exported" in found[0]
    assert "sora_ack_seconds_bucket has no label 'user'" in found[1]
    assert "sora_slack_calls_total has no label 'channel'" in found[2]
    assert problems(load(), exported, label_names()) == []


@pytest.mark.parametrize(("expr", "metrics"), [
    ("sora_takeovers_total", {"sora_takeovers_total"}),
    ('histogram_quantile(0.95, sum by (le, provider, call) (rate(sora_provider_call_seconds_bucket'
     '{provider=~"a|b", call!="sum(x)"}[$__rate_interval])))', {"sora_provider_call_seconds_bucket"}),
    ("sum(rate(a_total[5m] offset 1h30m)) by (job) / on (job) group_left (instance) b", {"a_total", "b"}),
    ('label_replace(up, "dst", "$1", "src", "(.*)") or vector(0) * 1e3 + Inf', {"up"}),
    ("max_over_time(x:recorded[1h:5m]) > bool 0.5 unless count without (le) (y)  # z", {"x:recorded", "y"}),
    ('{__name__="by_name"} + sum({"quoted.name", env="p"}) - topk(3, c) - scalar(d) @ start()',
     {"by_name", "quoted.name", "c", "d"}),
    ("SUM BY (provider) (increase(e[${range}])) / ignoring(x) f[$__range]", {"e", "f"}),
])
def test_the_tokenizer_finds_metric_names(expr: str, metrics: set[str]) -> None:
    assert parse(expr).metrics == metrics


def test_the_tokenizer_reads_groupings_and_matchers() -> None:
    q = parse('sum by (provider) (rate(a{outcome!="ok"}[5m])) / sum(rate(b[5m])) by (provider, call)'
              ' / count without (le) (c) + max by (job) ({__name__="d", env="p"})')
    assert q.groupings == [(("provider",), frozenset({"a"})), (("provider", "call"), frozenset({"b"})),
                           (("job",), frozenset({"d"}))]
    assert q.matchers == {("a", "outcome"), ("d", "env")}


@pytest.mark.parametrize("expr", ["sum(rate(x[5m])", "ratez(x[5m])", "x[5m", "x{a=}", "x ? y", "sum by x (y)"])
def test_the_tokenizer_refuses_what_it_cant_read(expr: str) -> None:
    with pytest.raises(ValueError):
        parse(expr)


def test_dashboard_shape() -> None:
    d = load()
    assert (d["uid"], d["title"], d["refresh"]) == ("sora-bot", "sora-bot", "1m")
    assert d["time"] == {"from": "now-7d", "to": "now"}
    assert d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"

    panels = list(all_panels(d))
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), ids
    assert all(isinstance(p.get("title"), str) and p["title"].strip() for p in panels)
    rows = [p for p in panels if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["Requests", "Spend", "Failures", "Provider latency", "Delivery", "Slack"]
    for p in panels:
        if p["type"] == "row":
            assert not p.get("targets"), p["title"]
            assert p.get("panels") == [] or p.get("collapsed"), f"{p['title']}: an open row nests no panels"
            continue
        assert p["type"] in ("timeseries", "stat", "bargauge"), p["title"]
        assert p.get("datasource", {}).get("uid") == DATASOURCE_UID, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t.get("datasource", {}).get("uid") == DATASOURCE_UID, (p["title"], t["refId"])
            assert t["expr"].strip(), (p["title"], t["refId"])
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_units_follow_the_metrics() -> None:
    """Quantiles of a _seconds histogram are in seconds; panels of money only, in dollars."""
    for p in all_panels(load()):
        exprs = [t["expr"] for t in p.get("targets") or []]
        if not exprs:
            continue
        unit = p["fieldConfig"]["defaults"].get("unit")
        names = set().union(*(parse(e).metrics for e in exprs))
        if any("histogram_quantile" in e for e in exprs) and all(n.endswith("_seconds_bucket") for n in names):
            assert unit == "s", p["title"]
        if all("_usd_" in n for n in names):
            assert unit == "currencyUSD", p["title"]
    spend = next(p for p in all_panels(load()) if p["title"] == "Charged per day by provider")
    assert spend["targets"][0]["expr"] == "sum by (provider) (increase(sora_charged_usd_total[1d]))"
    assert spend["interval"] == "1d"
    ack = next(p for p in all_panels(load()) if p["title"].startswith("Ack latency"))
    steps = ack["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert ack["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line" and steps[-1]["value"] == 3
