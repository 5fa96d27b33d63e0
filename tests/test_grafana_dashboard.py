"""The Grafana dashboard and the Prometheus rules query only series the exporter exports; the
Alertmanager, Prometheus and Grafana provisioning files parse and hang together.

The exported names are discovered, never listed: the real ``MetricsExporter`` gathers the crafted
snapshot of tests/test_metrics.py (grown with the sections it leaves out) through its
``SnapshotGatherer``, and every sample name its prometheus-client registry collects counts. A series someone adds to the
exporter and to that snapshot is picked up; a panel or a rule on a name the exporter does not
export (a typo, a renamed series) fails here, not on an operator's empty panel.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.actors.test_metrics_exporter import FakeReader
from tests.test_metrics import COMPONENTS, SNAP_MS
from tradetree.actors.metrics_exporter import MetricsExporter, SnapshotGatherer
from tradetree.core.clock import ManualClock
from tradetree.telemetry.config import MetricsConfig

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "tradetree.json"
RULES = DEPLOY / "prometheus-rules.yml"
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTMANAGER = DEPLOY / "alertmanager.yml"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

# Series Prometheus makes itself for every target or rule, not the exporter's.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
                     "scrape_samples_post_metric_relabeling", "ALERTS", "ALERTS_FOR_STATE"}
# Labels Prometheus adds to every series of the job (deploy/prometheus.yml: job, instance, engine).
TARGET_LABELS = {"job", "instance", "engine"}
SEVERITIES = {"critical", "warning", "info"}


# -- what the exporter exports ---------------------------------------------------------------------


async def _exported_families() -> list[Any]:
    """The families the real exporter's registry collects from tests/test_metrics.py's snapshot, with
    the parts that snapshot leaves out (a model server, a canary), so that every family has samples."""
    reader = FakeReader()
    reader.snap["stats"]["ModelServer[vol]"] = {"state": "serving", "predictions_served": 3, "batches_failed": 0}
    reader.snap["stats"]["FillReconciler[okx]"]["canary"] = {"enabled": True, "failures_in_row": 1}
    components = {**COMPONENTS, "model_servers": {"vol": "ModelServer[vol]"}}
    clock = ManualClock(start_ms=SNAP_MS)
    exporter = MetricsExporter(MetricsConfig(enabled=True, port=0),
                               SnapshotGatherer(reader, components, timeout_secs=5.0, clock=clock), clock=clock)
    await exporter.refresh_now()
    families = list(exporter.registry.collect())
    # A malformed section is the only thing that exports tradetree_collect_errors_total.
    good_tree = copy.deepcopy(reader.snap["tree"])
    reader.snap["tree"] = {"RootSupervisor": "not a mapping"}
    await exporter.refresh_now()
    families += exporter.registry.collect()
    reader.snap["tree"] = good_tree
    return families


@dataclass
class Exported:
    """What the exporter's registry exports: ``labels`` maps each sample name to its label names;
    ``histograms`` are the histogram and summary families, whose ``_bucket``/``_sum``/``_count``
    map to the base name."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    histograms: set[str] = field(default_factory=set)

    def __contains__(self, name: str) -> bool:
        return name in self.labels

    def label_names(self, name: str) -> set[str]:
        return self.labels.get(name, set())


@pytest.fixture(scope="module")
def exported() -> Exported:
    out = Exported()
    for family in asyncio.run(_exported_families()):
        for sample in family.samples:
            out.labels.setdefault(sample.name, set()).update(sample.labels)
        if family.type in ("histogram", "summary", "gaugehistogram"):
            out.histograms.add(family.name)
            out.labels.setdefault(family.name, set()).update(
                *(set(s.labels) - {"le", "quantile"} for s in family.samples))
    assert len(out.labels) > 50, f"the exporter exported only {sorted(out.labels)}: is the snapshot still complete?"
    return out


# -- PromQL: the metric names an expression queries -------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "inf", "nan", "atan2"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects: identifiers that are not functions, keywords, label names
    (inside ``{}`` or a ``by (...)`` list), durations, numbers, strings or Grafana variables."""
    text = _STRINGS.sub('""', expr)
    text = _GRAFANA_VARS.sub("1m", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name = m.group(0)
        if name.lower() in _KEYWORDS or re.match(r"\s*\(", text[m.end():]):
            continue
        names.add(name)
    return names


def resolve(name: str, exported: Exported) -> str | None:
    """The exported name ``name`` stands for (itself, or a histogram's base for its ``_bucket``...)."""
    if name in exported or name in PROMETHEUS_SERIES:
        return name
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in exported.histograms:
            return name[: -len(suffix)]
    return None


def _labels_of(expr: str, exported: Exported) -> set[str]:
    """The label names the series ``expr`` selects carry, with those the scrape adds."""
    names = (resolve(n, exported) or n for n in promql_metric_names(expr))
    return set().union(*(exported.label_names(n) for n in names)) | TARGET_LABELS


def _unexported(exprs: dict[str, str], exported: Exported) -> list[str]:
    return [f"{where}: {name} ({expr})" for where, expr in exprs.items()
            for name in sorted(promql_metric_names(expr)) if resolve(name, exported) is None]


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (venue, layer) (60 * rate(tradetree_fills_applied_total{engine=~"$engine", layer=~"poll|h"}[$__rate_interval]))',
     {"tradetree_fills_applied_total"}),
    ('up{job="tradetree"} == 0 or absent(up{job="tradetree"})', {"up"}),
    ("histogram_quantile(0.99, sum(rate(a_seconds_bucket[5m])) by (le)) > bool 1e3", {"a_seconds_bucket"}),
    ("x - on(venue) group_left(strategy) y offset 1h unless z @ start()", {"x", "y", "z"}),
    ("sum without (instance) (a:recorded:rate5m) / ignoring (job) b", {"a:recorded:rate5m", "b"}),
    ('label_replace(q, "dst", "$1", "src", "(.*)")', {"q"}),
    ("increase(tradetree_x_total[${__range}]) * 0x1F + Inf", {"tradetree_x_total"}),
])
def test_promql_metric_names_finds_the_series_and_nothing_else(expr, names):
    assert promql_metric_names(expr) == names


def test_the_check_fails_on_a_name_the_exporter_does_not_export(exported):
    assert _unexported({"p": "rate(tradetree_fills_applied_total[5m])"}, exported) == []
    assert _unexported({"p": "rate(tradetree_fills_apllied_total[5m])"}, exported) == [
        "p: tradetree_fills_apllied_total (rate(tradetree_fills_apllied_total[5m]))"]
    assert resolve("tradetree_position_qty_count", exported) is None  # a gauge has no _count
    histogram = Exported(labels={"lat_seconds": {"venue"}}, histograms={"lat_seconds"})
    assert resolve("lat_seconds_bucket", histogram) == "lat_seconds" and resolve("lat_seconds_max", histogram) is None


# -- the dashboard --------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def _dashboard_exprs() -> dict[str, str]:
    out = {}
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return out


def test_every_series_the_dashboard_queries_is_exported(exported):
    exprs = _dashboard_exprs()
    assert len(exprs) > 40
    assert _unexported(exprs, exported) == []


def test_the_dashboard_variables_query_exported_series(exported):
    for var in _dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert m, f"variable {var['name']}: {var['definition']}"
        assert _unexported({f"variable {var['name']}": m.group(1)}, exported) == []
        assert m.group(2) in _labels_of(m.group(1), exported), f"{m.group(1)} has no label {m.group(2)}"


def test_the_dashboard_legends_name_labels_the_series_have(exported):
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            labels = _labels_of(target["expr"], exported)
            for used in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert used in labels, f"panel {panel['title']!r}: legend {{{{{used}}}}} is no label of {target['expr']}"


def test_the_dashboard_is_well_formed_and_picks_its_prometheus_from_a_variable():
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = list(_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for cell in ((x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                     for y in range(grid["y"], grid["y"] + grid["h"])):
            assert cell not in cells, f"panel {panel['title']!r} overlaps another"
            cells.add(cell)
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip(), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_grafana_provisioning_loads_the_dashboard_and_a_prometheus():
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "tradetree.yml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    [source] = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")


# -- the rules, Prometheus and Alertmanager --------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_series_the_rules_query_is_exported(exported):
    rules = _rules()
    assert len(rules) >= 10
    assert _unexported({f"rule {r['alert']}": r["expr"] for r in rules}, exported) == []


def test_every_rule_has_a_severity_an_action_and_names_labels_its_series_have(exported):
    for rule in _rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["action"], rule["alert"]
        labels = _labels_of(rule["expr"], exported)
        for text in rule["annotations"].values():
            for used in re.findall(r"\$labels\.(\w+)", text):
                assert used in labels, f"rule {rule['alert']}: $labels.{used} is no label of {rule['expr']}"


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    m = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"(.*)"\s*', matcher)
    assert m, f"matcher {matcher!r}"
    name, op, value = m.groups()
    got = labels.get(name, "")
    hit = re.fullmatch(value, got) is not None if op in ("=~", "!~") else got == value
    return hit if op in ("=", "=~") else not hit


def _route(route: dict[str, Any], labels: dict[str, str]) -> str:
    """The receiver Alertmanager picks for ``labels`` (first matching child, as with ``continue: false``)."""
    for child in route.get("routes", []):
        if all(_matches(m, labels) for m in child.get("matchers", [])):
            return _route({"receiver": route["receiver"], **child}, labels)
    return route["receiver"]


def _receivers(route: dict[str, Any]) -> Iterator[str]:
    yield route["receiver"]
    for child in route.get("routes", []):
        if "receiver" in child:
            yield child["receiver"]
        yield from _receivers({"receiver": route["receiver"], **child})


def test_alertmanager_routes_reference_defined_receivers_and_send_critical_rules_to_slack():
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    receivers = {r["name"]: r for r in config["receivers"]}
    assert len(receivers) == len(config["receivers"]), "a receiver name repeats"
    used = set(_receivers(config["route"]))
    assert used <= set(receivers), f"routes name undefined receivers {used - set(receivers)}"
    for rule in _rules():
        labels = {"alertname": rule["alert"], **rule["labels"]}
        receiver = receivers[_route(config["route"], labels)]
        if rule["labels"]["severity"] == "critical":
            assert receiver.get("slack_configs"), f"critical {rule['alert']} goes to {receiver['name']}, not Slack"
    # The webhook URL is a secret: only ever a file name in the config.
    for receiver in receivers.values():
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack and slack["api_url_file"].startswith("/")
    assert "slack_api_url" not in config.get("global", {})
    for pattern in config.get("templates", []):
        assert list(ALERTMANAGER.parent.glob(pattern)), f"template {pattern} matches no file"


def test_prometheus_loads_the_rules_and_sends_to_alertmanager():
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert all((PROMETHEUS.parent / f).is_file() for f in config["rule_files"])
    assert RULES.name in config["rule_files"]
    targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["127.0.0.1:9093"]
    assert [job["job_name"] for job in config["scrape_configs"]] == ["tradetree"]  # the rules' up{job=...}


@pytest.mark.skipif(not (shutil.which("promtool") and shutil.which("amtool")),
                    reason="promtool/amtool not installed (Debian: prometheus, prometheus-alertmanager)")
def test_promtool_and_amtool_accept_the_files_and_the_dashboard_promql(tmp_path):
    # The dashboard's queries as recording rules, Grafana's variables filled in: promtool parses the PromQL.
    def filled(expr: str) -> str:
        return re.sub(r"\$__\w+|\$\{__\w+\}", "5m", expr).replace("$engine", ".*").replace(
            "$venue", ".*").replace("$strategy", ".*")

    dash_rules = tmp_path / "dashboard-rules.yml"
    dash_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": filled(e)} for i, e in enumerate(_dashboard_exprs().values())]}]}))
    for args in (["promtool", "check", "config", str(PROMETHEUS)], ["promtool", "check", "rules", str(RULES)],
                 ["promtool", "check", "rules", str(dash_rules)], ["amtool", "check-config", str(ALERTMANAGER)]):
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
