"""The Grafana alert rules provisioned beside the dashboards (dashboards/provisioning/alerting/*.yaml).

- Their structure is what Grafana's file provisioning of alerting reads (apiVersion 1, groups of rules,
  each a query A, a reduce B and a threshold C as its condition, every expression naming a refId of
  the rule), in the folder the dashboards are provisioned in, on the datasources provisioned beside
  them (docker-compose.yml mounts the whole provisioning directory into Grafana).
- The ClickHouse rules' SQL runs on current ClickHouse (chDB), expanded as the plugin expands it over
  the rule's relativeTimeRange, on hand-made rows whose results are worked out below: a table whose
  string columns are the alert's labels and whose one numeric column is its value. Every ClickHouse
  rule is run here (tests/it/dashboards.rs runs them on ClickHouse 18.16 against the simulator's
  truth).
- The Prometheus rules' PromQL names only metrics and labels botmeter publishes.
"""

import json
import re

import pytest
import yaml

from test_compose import PROMQL_FUNCTIONS, provisioned_datasources, provisioning_dir, published_labels, published_metrics
from test_dashboards_chdb import DEVICES, ROOT, at, expand, run, usage
from test_migrations_chdb import db  # noqa: F401  (a fixture: the migrated schema in chDB)

EXPRESSION_TYPES = {"reduce", "threshold", "math", "resample", "classic_conditions", "sql"}


def alerting_files():
    return sorted((provisioning_dir() / "alerting").glob("*.yaml"))


def rules():
    out = []
    for path in alerting_files():
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == 1, path.name
        assert set(document) <= {"apiVersion", "groups", "contactPoints", "policies", "templates", "muteTimes",
                                 "deleteRules"}, path.name
        for group in document["groups"]:
            out += [(path.name, group, rule) for rule in group["rules"]]
    return out


def query(rule):
    (a,) = [d for d in rule["data"] if d["refId"] == "A"]
    return a


def clickhouse_rules():
    return {rule["uid"]: rule for _, _, rule in rules() if query(rule)["datasourceUid"] == "botmeter-clickhouse"}


def test_rules_have_the_shape_grafana_provisions():
    found = rules()
    assert alerting_files() and found
    sources = {source["uid"]: source["type"] for _, source in provisioned_datasources()}
    dashboard_folders = {p["folder"] for p in yaml.safe_load(
        (provisioning_dir() / "dashboards" / "botmeter.yaml").read_text())["providers"]}
    uids = set()
    for file, group, rule in found:
        where = f"{file}: {rule.get('uid')}"
        assert group["orgId"] == 1 and group["name"] and re.fullmatch(r"\d+[smh]", group["interval"]), where
        assert group["folder"] in dashboard_folders, f"{where}: beside the dashboards"
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", rule["uid"]), where
        uids.add(rule["uid"])
        assert rule["title"] and rule["noDataState"] in {"OK", "NoData", "Alerting"}, where
        assert rule["execErrState"] in {"OK", "Error", "Alerting"} and re.fullmatch(r"\d+[smh]", rule["for"]), where
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in {"warning", "critical"}, where
        refs = [d["refId"] for d in rule["data"]]
        assert len(set(refs)) == len(refs) and rule["condition"] in refs, where
        for data in rule["data"]:
            assert data["model"]["refId"] == data["refId"], where
            if data["datasourceUid"] == "__expr__":
                assert data["model"]["type"] in EXPRESSION_TYPES, where
                assert data["model"]["expression"] in refs and data["model"]["expression"] != data["refId"], where
            else:
                assert data["datasourceUid"] in sources, f"{where}: {data['datasourceUid']} is provisioned"
                model_source = data["model"]["datasource"]
                assert model_source == {"type": sources[data["datasourceUid"]], "uid": data["datasourceUid"]}, where
                window = data["relativeTimeRange"]
                assert window["from"] > window["to"] >= 0, where
        (condition,) = [d for d in rule["data"] if d["refId"] == rule["condition"]]
        assert condition["model"]["type"] == "threshold", where
        (check,) = condition["model"]["conditions"]
        assert check["evaluator"]["type"] in {"gt", "lt"} and len(check["evaluator"]["params"]) == 1, where
    assert len(uids) == len(found), "unique rule uids"
    for uid in ("botmeter-device-dropped", "botmeter-revoked-credential-used", "botmeter-unattributed-bytes"):
        assert uid in clickhouse_rules(), uid


def test_clickhouse_rules_use_the_plugin_query_model():
    for uid, rule in clickhouse_rules().items():
        model = query(rule)["model"]
        assert (model["editorType"], model["format"], model["queryType"]) == ("sql", 1, "table"), uid
        assert "${" not in model["rawSql"], f"{uid}: no dashboard variables in an alert query"
        assert "toStartOfInterval" not in model["rawSql"] and "$__timeInterval" not in model["rawSql"], uid


def test_prometheus_rules_name_published_metrics():
    metrics, labels = published_metrics(), published_labels()
    prometheus = [rule for _, _, rule in rules() if query(rule)["datasourceUid"] == "botmeter-prometheus"]
    assert {"max(botmeter_degraded)"} <= {query(rule)["model"]["expr"] for rule in prometheus}
    for rule in prometheus:
        expr = query(rule)["model"]["expr"]
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            assert set(re.split(r"\s*,\s*", clause.strip())) <= labels, f"{rule['uid']}: {expr}"
        bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]", "", expr)
        for name in set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)) - PROMQL_FUNCTIONS:
            assert name in metrics, f"{rule['uid']}: {name} is not a metric botmeter publishes"
        for label in re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])):
            assert label in labels, f"{rule['uid']}: annotation label {label}"


# --- The ClickHouse rules on current ClickHouse ---------------------------------------------------


@pytest.fixture()
def alerting(db):  # noqa: F811  (the fixture imported above)
    """The fleet of test_dashboards_chdb.py's DEVICES, and usage on 2026-03-01: cr_b used at 07:00
    (its traffic) and at 07:50 after its deletion at 07:40 (flagged credential_deleted; one of the two
    flagged rows restated: a -1 and a +1 copy), and unattributed rows at 07:30 and 07:55."""
    db.insert("control_events_log", DEVICES + [
        {**DEVICES[1], "event_id": "f9", "event_type": "tunnel_credential_deleted.v0", "event_time": "2026-03-01 07:40:00",
         "event_time_us": at("07:40") * 1_000_000},
    ])
    revoked = dict(bytes_out=500, flags=["credential_deleted"])
    db.insert("usage_events", [
        usage("t1", "2026-03-01 07:00:00", "bot_b", "ep_b", "b.ngrok.app", bytes_out=10),
        usage("t2", "2026-03-01 07:50:00", "bot_b", "ep_b", "b.ngrok.app", **revoked),
        usage("t3", "2026-03-01 07:52:00", "bot_b", "ep_b", "b.ngrok.app", **revoked),
        usage("t3", "2026-03-01 07:52:00", "bot_b", "ep_b", "b.ngrok.app", sign=-1, **revoked),
        usage("t3", "2026-03-01 07:52:00", "bot_b", "ep_b", "b.ngrok.app", **revoked),
        usage("u1", "2026-03-01 07:30:00", "", "", "x.ngrok.app", status="unattributed",
              unattributed_reason="no_endpoint", bytes_in=7, bytes_out=60_000_000),
        usage("u2", "2026-03-01 07:55:00", "", "", "x.ngrok.app", status="unattributed",
              unattributed_reason="no_endpoint", bytes_in=3, bytes_out=50_000_000),
    ])
    return db


def evaluate(db, rule, now):
    """The rule's query as Grafana evaluating it at `now` has the plugin run it."""
    a = query(rule)
    window = a["relativeTimeRange"]
    columns, rows = run(db, expand(a["model"]["rawSql"], now - window["from"], now - window["to"], 60, {}))
    numeric = [name for name, kind in columns if not kind.startswith("String")]
    assert len(numeric) == 1, (rule["uid"], columns)
    return rows


def test_clickhouse_rules_on_current_clickhouse(alerting):
    found = clickhouse_rules()
    expected = {
        # At 08:00 cr_b's only session stopped at 03:00 (dropped 5 h); at 07:45 it is deleted, so
        # not dropped any more; cr_a is online, cr_c never seen.
        "botmeter-device-dropped": [
            (at("07:00"), [{"credential": "cr_b", "owner": "bot_b", "kind": "authtoken", "gone_for": 4 * 3600.0}]),
            (at("08:00"), []),
        ],
        # The 15 minutes before 08:00 hold t2 and t3 (restated, counted once); before 07:55, t2 only.
        "botmeter-revoked-credential-used": [
            (at("08:00"), [{"owner": "bot_b", "credential": "cr_b", "events": 2.0}]),
            (at("07:51"), [{"owner": "bot_b", "credential": "cr_b", "events": 1.0}]),
            (at("07:49"), []),
        ],
        # Bytes in + out, unattributed, in the hour before.
        "botmeter-unattributed-bytes": [
            (at("08:00"), [{"unattributed_bytes": 110_000_010.0}]),
            (at("07:40"), [{"unattributed_bytes": 60_000_007.0}]),
        ],
    }
    assert set(expected) == set(found), "every ClickHouse rule is run here"
    for uid, cases in expected.items():
        for now, rows in cases:
            assert evaluate(alerting, found[uid], now) == rows, (uid, now)
    # The unattributed rule's threshold (100 MB): over at 08:00, under at 07:40.
    (threshold,) = [d for d in found["botmeter-unattributed-bytes"]["data"] if d["model"].get("type") == "threshold"]
    assert threshold["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [100_000_000]}
