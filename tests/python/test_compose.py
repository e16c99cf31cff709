"""docker-compose.yml, the Dockerfile and the Grafana/Prometheus provisioning, checked as far as an
engine-less machine allows (no Docker engine runs here, so none of it has been started):

- the compose file is valid for `docker-compose config`, and every botmeter container runs a command
  line and environment the botmeter binary accepts (the same binary the test suite runs);
- every bind-mounted host path is a file or directory of the repository, and every botmeter
  container can write what it writes (the image runs as uid 10001: named volumes on directories the
  image creates for that user, no writable bind mount);
- every image is pinned (no `latest`, no missing tag, the Grafana plugin's version too), and the
  pinned ClickHouse plugin declares the pinned Grafana within its `grafanaDependency` range;
- services wait for what they need to be healthy, stateful services keep their data in volumes;
- the provisioning files have the shapes Grafana documents
  (https://grafana.com/docs/grafana/latest/administration/provisioning/), and every dashboard's
  panels read a provisioned datasource;
- Prometheus scrapes `botmeter run` and `botmeter serve` where they listen, and the ops dashboard's
  PromQL names only metrics botmeter publishes.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# The binary `cargo build` made: under CARGO_TARGET_DIR when it is set (relative to the repository).
BINARY = ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "botmeter"

PLUGIN = "grafana-clickhouse-datasource"
# The plugin's published compatibility range, by plugin version: `dependencies.grafanaDependency` of
# its src/plugin.json at the release tag, github.com/grafana/clickhouse-datasource (the same field
# grafana.com/api/plugins/grafana-clickhouse-datasource/versions serves). v4.0.0 to v4.14.1 say
# ">=9.5.0"; v4.15.0 raised it to ">=11.6.0" (CHANGELOG: "Bump Grafana minimum version to v11.6.0",
# #1753), v4.18.0 on say ">=11.6.0-0". Pinning another plugin version means writing its range here.
GRAFANA_DEPENDENCY = {
    "4.14.1": ">=9.5.0",
    "4.15.0": ">=11.6.0",
    "4.20.0": ">=11.6.0-0",
}


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def services():
    return compose()["services"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="apt-get install docker-compose")
def test_compose_file_is_valid():
    for args in (["config", "-q"], ["--profile", "simulate", "config", "-q"], ["--profile", "ngrok", "config", "-q"],
                 ["--profile", "cluster", "config", "-q"]):
        result = subprocess.run(["docker-compose", "-f", str(COMPOSE), *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def botmeter_services():
    return {name: s for name, s in services().items() if s.get("image", "").startswith("botmeter")}


def run_help(*args):
    result = subprocess.run([str(BINARY), *args, "--help"], capture_output=True, text=True,
                            env={**os.environ, "BOTMETER_LOG": "error"})
    return result


def test_every_botmeter_service_runs_a_command_the_binary_accepts():
    assert BINARY.exists(), "build the binary first (cargo build)"
    found = botmeter_services()
    assert set(found) >= {"migrate", "run", "serve", "simulate", "sync", "receive"}
    known = run_help().stdout
    for name, service in found.items():
        command = service["command"]
        # --help after the real flags: clap rejects unknown flags before printing help.
        result = run_help(*command)
        assert result.returncode == 0, f"{name}: {command}: {result.stderr}"
        known += result.stdout
    # Every variable set for the containers is a setting of some botmeter command (no typos).
    for name, service in found.items():
        for variable in service["environment"]:
            assert variable in known, f"{name}: {variable} is not a setting of any botmeter command"


# --- Mounts and the image's user -------------------------------------------------------------------


def mounts(service):
    """(source, target, read_only) of each volume entry (short syntax)."""
    out = []
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def is_bind(source):
    return source.startswith((".", "/", "~"))


def tracked_files():
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_every_mounted_host_path_is_in_the_repository():
    tracked = tracked_files()
    for name, service in services().items():
        for source, target, _ in mounts(service):
            if not is_bind(source):
                continue
            path = (ROOT / source).resolve()
            relative = path.relative_to(ROOT).as_posix()  # raises when the path leaves the repository
            present = relative in tracked or any(f.startswith(relative + "/") for f in tracked)
            assert present, f"{name}: {source} (mounted at {target}) is not in the repository"


def runtime_stage():
    """The Dockerfile's last stage: the image the containers run."""
    stages = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.M)
    return stages[-1]


def test_botmeter_containers_can_write_their_volumes():
    stage = runtime_stage()
    (user,) = re.findall(r"^USER (\S+)", stage, flags=re.M)
    (uid,) = re.findall(r"useradd [^\n]*--uid (\d+) " + re.escape(user), stage)
    assert user != "root" and int(uid) != 0, "the runtime runs as a non-root user"
    # Directories the image creates for its user: a named volume mounted there starts as a copy of
    # the image's directory, owner included, so the user can write it.
    owned = set(re.findall(r"install -d [^\n]*-o " + re.escape(user) + r" [^\n]*?(/\S+)", stage))
    declared = compose().get("volumes") or {}
    for name, service in botmeter_services().items():
        writable = []
        for source, target, read_only in mounts(service):
            if is_bind(source):
                # A host directory keeps the host's owner: uid 10001 cannot write it (unless `user:`).
                assert read_only or "user" in service, f"{name}: writable bind mount {source}"
                continue
            assert source in declared, f"{name}: volume {source} is not declared"
            assert target in owned, f"{name}: {target} is not a directory the image makes for {user}"
            writable.append(target)
        command = service["command"]
        for flag in ("--truth-file",):
            if flag in command:
                written = command[command.index(flag) + 1]
                assert any(written.startswith(t + "/") for t in writable), (
                    f"{name}: {flag} {written} is not on a volume the container can write")


# --- Pinned versions -------------------------------------------------------------------------------


VERSION_TAG = re.compile(r"^v?\d+(\.\d+)+([-.][\w.]+)?$")


def image_tag(image):
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return name, tag


def installed_plugins():
    """GF_INSTALL_PLUGINS: comma-separated `id version` (the Grafana image's run.sh passes each to
    `grafana cli plugins install`, which takes an optional version after the id)."""
    value = services()["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    return [entry.split() for entry in value.split(",")]


def test_every_image_is_pinned():
    for name, service in services().items():
        if "build" in service or service.get("image", "").startswith("botmeter"):
            continue
        image, tag = image_tag(service["image"])
        assert VERSION_TAG.match(tag), f"{name}: {service['image']} is not pinned to a version"
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE.read_text(), flags=re.M))
    for line in re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M):
        if line in stages:  # an earlier stage of this file
            continue
        image, tag = image_tag(line)
        assert tag and tag != "latest", f"Dockerfile: FROM {line} is not pinned"
    for line in re.findall(r"cargo install [^\n]*", DOCKERFILE.read_text()):
        assert re.search(r"--version \d+\.\d+\.\d+", line) and "--locked" in line, line
    for entry in installed_plugins():
        assert len(entry) == 2 and VERSION_TAG.match(entry[1]), f"GF_INSTALL_PLUGINS: {entry} has no version"


def parse_version(text):
    """(major, minor, patch, prerelease?) of a semver string; `-0` and other prereleases sort first."""
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([\w.]+))?$", text)
    assert match, f"not a version: {text}"
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre is not None else 1)


def satisfies(version, requirement):
    """npm-style ranges as plugin.json writes them: `||` alternatives of space-separated comparators.
    A prerelease floor (`>=11.6.0-0`) admits the release and its prereleases."""
    v = parse_version(version)
    for alternative in requirement.split("||"):
        ok = True
        for comparator in alternative.split():
            op, bound = re.match(r"^(>=|<=|>|<|=)?(.+)$", comparator).groups()
            b = parse_version(bound)
            ok &= {">=": v >= b, "<=": v <= b, ">": v > b, "<": v < b, "=": v == b, None: v == b}[op]
        if ok:
            return True
    return False


def test_version_ranges():
    assert satisfies("11.2.0", ">=9.5.0") and not satisfies("11.2.0", ">=11.6.0")
    assert satisfies("11.6.0", ">=11.6.0-0") and satisfies("11.6.0-beta1", ">=11.6.0-0")
    assert not satisfies("11.5.9", ">=11.6.0-0") and satisfies("12.1.0", ">=11.6.0 <13.0.0")


def test_grafana_plugin_is_compatible_with_the_grafana_image():
    grafana = services()["grafana"]
    image, grafana_version = image_tag(grafana["image"])
    assert image == "grafana/grafana"
    (plugin,) = [entry for entry in installed_plugins() if entry[0] == PLUGIN]
    assert len(plugin) == 2, f"{PLUGIN} is installed without a version: {plugin}"
    version = plugin[1]
    assert version in GRAFANA_DEPENDENCY, f"write down {PLUGIN} {version}'s grafanaDependency"
    requirement = GRAFANA_DEPENDENCY[version]
    assert satisfies(grafana_version, requirement), (
        f"{PLUGIN} {version} needs Grafana {requirement}, the image is {grafana_version}")
    # The compose file tells its reader the same range.
    assert f'"grafanaDependency": "{requirement}"' in COMPOSE.read_text()


# --- Health and data -------------------------------------------------------------------------------


def test_services_wait_for_what_they_need():
    all_services = services()
    for name, service in all_services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in all_services[dependency], f"{name}: {dependency} has no healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {dependency}: {condition}"
    # Every long-running service reports its health; `sync` is a client with no listener (and no
    # state to lose: it restarts and rebuilds from the control topic).
    for name, service in all_services.items():
        if name not in {"migrate", "simulate", "sync", "migrate-cluster"}:
            assert "healthcheck" in service, f"{name} has no healthcheck"

    def waits(name, dependency, condition="service_healthy"):
        assert all_services[name]["depends_on"][dependency]["condition"] == condition, (name, dependency)

    for name in ("migrate", "run", "serve", "grafana"):
        waits(name, "clickhouse")
    for name in ("run", "simulate", "sync", "receive"):
        waits(name, "kafka")
    for name in ("run", "serve"):
        waits(name, "migrate", "service_completed_successfully")
    # The cluster profile: every server waits for ZooKeeper, the migration for every server, the
    # pipeline and the API for the migration.
    for node in ("s1r1", "s1r2", "s2r1", "s2r2"):
        waits(f"ch-{node}", "zookeeper")
        waits("migrate-cluster", f"ch-{node}")
    waits("run-cluster", "kafka")
    for name in ("run-cluster", "serve-cluster"):
        waits(name, "migrate-cluster", "service_completed_successfully")


def test_the_cluster_pipeline_writes_per_shard_in_the_clusters_order():
    """run-cluster lists every server of clickhouse-cluster/config.d/cluster.xml as its shard's
    replica, shards in the cluster's order: a partition's rows then go to the shard the
    Distributed tables' sharding key names (botmeter checks the order against system.clusters at
    start, but only once the containers run)."""
    import xml.etree.ElementTree as ET

    cluster = ET.parse(ROOT / "clickhouse-cluster" / "config.d" / "cluster.xml").getroot()
    shards = [
        [f"http://{replica.findtext('host')}:8123" for replica in shard.findall("replica")]
        for shard in cluster.find("remote_servers/botmeter_cluster").findall("shard")
    ]
    urls = services()["run-cluster"]["environment"].get("BOTMETER_CLICKHOUSE_SHARD_URLS", "")
    assert [shard.split(",") for shard in urls.split(";")] == shards, urls
    assert "--cluster" in services()["run-cluster"]["command"]


def test_healthchecks_use_tools_the_images_have():
    runtime = runtime_stage()
    for name, service in botmeter_services().items():
        if "healthcheck" not in service:
            continue
        test = service["healthcheck"]["test"]
        tool = (test[1].split()[0] if test[0] == "CMD-SHELL" else test[1])
        assert re.search(r"apt-get install [^\n]*\b" + re.escape(tool) + r"\b", runtime), (
            f"{name}: the runtime image does not install {tool}")


def test_stateful_services_keep_their_data_in_volumes():
    declared = compose().get("volumes") or {}
    data_dirs = {
        "kafka": "/var/lib/kafka/data",
        "clickhouse": "/var/lib/clickhouse",
        "grafana": "/var/lib/grafana",
        "prometheus": "/prometheus",
    }
    # The cluster profile: ZooKeeper and every ClickHouse server of the cluster.
    data_dirs.update({"zookeeper": "/data"})
    data_dirs.update({f"ch-{node}": "/var/lib/clickhouse" for node in ("s1r1", "s1r2", "s2r1", "s2r2")})
    for name, target in data_dirs.items():
        volumes = {t: s for s, t, _ in mounts(services()[name])}
        assert volumes.get(target) in declared, f"{name}: no named volume at {target}"
    # Kafka writes its log where the volume is.
    assert services()["kafka"]["environment"]["KAFKA_LOG_DIRS"] == data_dirs["kafka"]


def test_the_dockerfile_caches_dependencies_in_their_own_layer():
    text = DOCKERFILE.read_text()
    build = [s for s in re.split(r"^FROM ", text, flags=re.M) if " AS build" in s.splitlines()[0]]
    assert build, "a build stage"
    stage = build[0]
    cook = stage.find("cargo chef cook")
    assert cook != -1, "dependencies built from the recipe alone"
    assert cook < stage.find("COPY . ."), "dependencies are built before the sources are copied"
    assert "--release" in stage[cook:].split("\n")[0]


# --- Grafana provisioning --------------------------------------------------------------------------

GRAFANA = services()["grafana"] if COMPOSE.exists() else {}
# Keys Grafana documents for a provisioned datasource and a dashboard provider.
DATASOURCE_KEYS = {
    "name", "type", "access", "orgId", "uid", "url", "user", "database", "basicAuth",
    "basicAuthUser", "withCredentials", "isDefault", "jsonData", "secureJsonData", "version",
    "editable",
}
PROVIDER_KEYS = {
    "name", "orgId", "folder", "folderUid", "type", "disableDeletion", "updateIntervalSeconds",
    "allowUiUpdates", "options",
}


def grafana_mounts():
    """Container path -> repository path, for the Grafana service's bind mounts."""
    return {target: ROOT / source for source, target, _ in mounts(GRAFANA) if is_bind(source)}


def provisioning_dir():
    return grafana_mounts()["/etc/grafana/provisioning"]


def provisioned_datasources():
    out = []
    for path in sorted((provisioning_dir() / "datasources").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == 1, path.name
        assert set(document) <= {"apiVersion", "datasources", "deleteDatasources", "prune"}, path.name
        out += [(path.name, source) for source in document["datasources"]]
    return out


def test_datasources_have_the_shape_grafana_documents():
    found = provisioned_datasources()
    assert {source["type"] for _, source in found} >= {PLUGIN, "prometheus"}
    for file, source in found:
        assert set(source) <= DATASOURCE_KEYS, f"{file}: unknown keys {set(source) - DATASOURCE_KEYS}"
        for key in ("name", "type", "uid", "access"):
            assert isinstance(source.get(key), str) and source[key], f"{file}: {key}"
        assert source["access"] in {"proxy", "direct"}, file
        assert isinstance(source.get("jsonData", {}), dict), file
        if source["type"] == "prometheus":
            # Proxy access: Grafana's server calls the URL, so it names the compose service.
            assert source["url"] == "http://prometheus:9090", file
            assert "prometheus" in services(), file
        if source["type"] == PLUGIN:
            # The plugin reads its server from jsonData (v4 configuration), not from `url`.
            assert source["jsonData"]["host"] in services(), file
    assert len({s["uid"] for _, s in found}) == len(found), "unique uids"
    assert sum(bool(s.get("isDefault")) for _, s in found) <= 1, "one default datasource"


def dashboard_providers():
    out = []
    for path in sorted((provisioning_dir() / "dashboards").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == 1, path.name
        out += [(path.name, provider) for provider in document["providers"]]
    return out


def test_dashboard_providers_have_the_shape_grafana_documents():
    found = dashboard_providers()
    assert found
    for file, provider in found:
        assert set(provider) <= PROVIDER_KEYS, f"{file}: unknown keys {set(provider) - PROVIDER_KEYS}"
        assert isinstance(provider["name"], str) and provider["type"] == "file", file
        assert set(provider["options"]) <= {"path", "foldersFromFilesStructure"}, file
        assert provider["options"]["path"] in grafana_mounts(), (
            f"{file}: {provider['options']['path']} is not a directory mounted into Grafana")


def provisioned_dashboards():
    for _, provider in dashboard_providers():
        directory = grafana_mounts()[provider["options"]["path"]]
        yield from sorted(directory.rglob("*.json"))


def panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_every_dashboard_reads_a_provisioned_datasource():
    """Each panel's and target's datasource is a provisioned uid, or a `datasource` variable whose
    plugin type is a provisioned datasource's (Grafana picks one of that type)."""
    sources = [s for _, s in provisioned_datasources()]
    uids = {s["uid"]: s["type"] for s in sources}
    types = {s["type"] for s in sources}
    files = list(provisioned_dashboards())
    assert {p.name for p in files} >= {"overview.json", "owner.json", "overage.json", "anomalies.json", "ops.json"}
    dashboard_uids = set()
    for path in files:
        dashboard = json.loads(path.read_text())
        for key in ("uid", "title", "panels"):
            assert dashboard.get(key), f"{path.name}: {key}"
        dashboard_uids.add(dashboard["uid"])
        variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}

        def check(reference, where):
            uid = reference["uid"]
            variable = re.fullmatch(r"\$\{?(\w+)\}?", uid)
            if variable:
                v = variables.get(variable.group(1))
                assert v and v["type"] == "datasource", f"{where}: {uid} is not a datasource variable"
                assert v["query"] in types and reference.get("type", v["query"]) == v["query"], where
            else:
                assert uid in uids and reference.get("type", uids[uid]) == uids[uid], f"{where}: {uid}"

        for panel in panels(dashboard):
            if panel["type"] in {"row", "text"}:
                continue
            where = f"{path.name}: {panel.get('title')}"
            assert panel.get("datasource"), where
            check(panel["datasource"], where)
            for target in panel.get("targets", []):
                check(target.get("datasource", panel["datasource"]), where)
    assert len(dashboard_uids) == len(files), "unique dashboard uids"


# --- Prometheus and the ops dashboard --------------------------------------------------------------


def listen_port(command, flag):
    address = command[command.index(flag) + 1]
    host, port = address.rsplit(":", 1)
    assert host == "0.0.0.0", f"{flag} {address}: reachable from other containers"
    return int(port)


def test_prometheus_scrapes_run_and_serve():
    prometheus = services()["prometheus"]
    (config_path,) = [ROOT / s for s, t, _ in mounts(prometheus) if t == "/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    run, serve = services()["run"]["command"], services()["serve"]["command"]
    assert f"run:{listen_port(run, '--ops-listen')}" in targets
    assert f"serve:{listen_port(serve, '--metrics-listen')}" in targets
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"


def published_metrics():
    """Metric name -> kind, from the constants botmeter's recorders are given (`ops.rs` `names` for
    `botmeter run`; for `botmeter serve`, `reads.rs` `metric`, the fleet gauges of `fleet.rs`
    `fleet_gauge` and the alerts gauge of `alert_gauges.rs`) and the describe_* call of each."""
    out = {}
    for path, module in ((ROOT / "crates/botmeter/src/ops.rs", "names::"), (ROOT / "crates/query/src/api/reads.rs", "metric::"),
                         (ROOT / "crates/query/src/api/fleet.rs", "fleet_gauge::"),
                         (ROOT / "crates/query/src/api/alert_gauges.rs", "")):
        text = path.read_text()
        constants = dict(re.findall(r'pub const (\w+): &str = "(\w+)";', text))
        assert constants, path
        kinds = {c: k for k, c in re.findall(r"describe_(counter|gauge|histogram)!\(\s*" + module + r"(\w+)", text)}
        for constant, name in constants.items():
            if name.startswith("botmeter_"):
                out[name] = kinds.get(constant, "untyped")
    return out


def published_labels():
    """Label names botmeter attaches (`"label" =>` in the metrics macros, the API's label tuples),
    and those Prometheus adds."""
    labels = {"job", "instance", "le"}
    for path in (ROOT / "crates").rglob("*.rs"):
        text = path.read_text()
        for call in re.findall(r"metrics::(?:counter|gauge|histogram)!\(([^;]*?)\)", text, flags=re.S):
            labels |= set(re.findall(r'"(\w+)" =>', call))
    # The API passes its labels as arrays of (name, value): `let labels = [("route", …), …]`.
    for array in re.findall(r"let \w*label\w* = \[(.*?)\];", (ROOT / "crates/query/src/api/reads.rs").read_text()):
        labels |= set(re.findall(r'\("(\w+)", ', array))
    return labels


PROMQL_FUNCTIONS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "max", "min", "avg", "count", "by",
    "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "clamp_min",
    "max_over_time", "min_over_time", "avg_over_time", "changes", "resets", "topk", "bottomk",
    "label_replace", "vector", "scalar", "time", "abs", "sort_desc", "sort", "absent", "up", "bool",
    "offset",
}


def ops_expressions():
    dashboard = json.loads((ROOT / "dashboards" / "ops.json").read_text())
    out = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return dashboard, out


def test_ops_dashboard_names_only_published_metrics():
    metrics = published_metrics()
    assert {"botmeter_events_total", "botmeter_api_requests_total", "botmeter_build_info"} <= set(metrics)
    names = {}
    for name, kind in metrics.items():
        names[name] = name
        if kind == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                names[name + suffix] = name
    labels = published_labels()
    dashboard, expressions = ops_expressions()
    used = set()
    for title, expr in expressions:
        # Label matchers and grouping clauses name labels; strings are values.
        stripped = re.sub(r'"[^"]*"', '""', expr)
        for block in re.findall(r"\{([^}]*)\}", stripped):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", block):
                assert label in labels, f"{title}: label {label} in {expr}"
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", stripped):
            for label in re.split(r"\s*,\s*", clause.strip()):
                assert label in labels, f"{title}: label {label} in {expr}"
        bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", stripped)
        bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", bare)
        identifiers = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)) - PROMQL_FUNCTIONS
        identifiers -= {"e"}  # 1e3
        assert identifiers, f"{title}: {expr} names no metric"
        for identifier in identifiers:
            assert identifier in names, f"{title}: {identifier} is not a metric botmeter publishes ({expr})"
            used.add(names[identifier])
        for histogram in re.findall(r"histogram_quantile\([^,]+,[^)]*?(\w+)_bucket", stripped):
            assert metrics.get(histogram) == "histogram", f"{title}: {histogram} is not a histogram"
    # What an operator asks about, each on the dashboard.
    wanted = {
        "botmeter_consumer_lag_messages", "botmeter_batch_write_seconds", "botmeter_events_total",
        "botmeter_dead_letters_total", "botmeter_degraded", "botmeter_repeated_events_total",
        "botmeter_api_requests_total", "botmeter_api_request_seconds", "botmeter_api_shed_total",
        "botmeter_fleet_agents_online", "botmeter_fleet_agents_online_by_owner_kind", "botmeter_fleet_dropped_devices",
        "botmeter_alerts_firing",
    }
    assert wanted <= used, f"not on the ops dashboard: {wanted - used}"


def test_ops_dashboard_reads_prometheus():
    dashboard, expressions = ops_expressions()
    assert dashboard["uid"] == "botmeter-ops" and expressions
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] in {"row", "text"}:
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${" + variable["name"] + "}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["refId"], panel["title"]


# --- botmeter receive ------------------------------------------------------------------------------


def test_receive_runs_with_a_keys_file_of_digests_and_is_scraped():
    """The ngrok profile's receive service mounts a keys file of SHA-256 digests (never keys; the demo key is named only in a
    comment), serves /readyz where its health check asks, and Prometheus scrapes its metrics."""
    import tomllib
    receive = services()["receive"]
    assert receive["profiles"] == ["ngrok"]
    (keys_mount,) = [(s, t) for s, t, ro in mounts(receive) if is_bind(s) and ro]
    assert receive["environment"]["BOTMETER_RECEIVE_ACCESS_KEYS_FILE"] == keys_mount[1]
    keys = tomllib.loads((ROOT / keys_mount[0]).read_text())["keys"]
    assert keys and all(re.fullmatch(r"[0-9a-f]{64}", k["sha256"]) for k in keys)
    command = receive["command"]
    listen = command[command.index("--listen") + 1]
    assert listen.split(":")[1] in " ".join(receive["healthcheck"]["test"])
    metrics = command[command.index("--metrics-listen") + 1].split(":")[1]
    scraped = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert any(f"receive:{metrics}" in c["static_configs"][0]["targets"] for c in scraped)
