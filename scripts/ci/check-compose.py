#!/usr/bin/env python3
"""Structure check of docker-compose.yml (CI has no Docker engine to run it).

Parses the file (PyYAML, pinned in scripts/dev/reference/requirements.txt: run it with the python
that `scripts/dev/make-expected.sh --venv` prints) and checks that every
service names an image or a build, every `depends_on` / network / named volume it uses is
defined, the `doris` profile has the Apache Doris FE and BE images and a pipeline configured
for the Doris sink, and every DICOM_PIPELINE_* variable names a key of config.example.toml.

Metrics (deploy/): the `prometheus` and `grafana` services exist; every file or directory
bind-mounted from the repository exists; Prometheus's `dicom-pipeline` job finds its targets
by DNS under service names whose DICOM_PIPELINE_METRICS__LISTEN is reachable (not loopback)
on the scrape port; Grafana's provisioned data source points at the prometheus service and
its dashboard provider at the directory the dashboards are mounted in; every dashboard JSON
parses, its PromQL names only the metrics listed in METRICS below and each of them at least
once (the histogram at least through _bucket), its `$variables` are defined, and its panels use
the provisioned data source uid or the dashboard's Prometheus `datasource` variable.
"""
import json
import os
import re
import sys
from urllib.parse import urlsplit

try:
    import yaml
except ImportError:
    sys.exit("check-compose: PyYAML is not installed; run with $(scripts/dev/make-expected.sh --venv)")

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with open(os.path.join(root, "docker-compose.yml")) as f:
    compose = yaml.safe_load(f)
with open(os.path.join(root, "config.example.toml")) as f:
    example = f.read()

# config.example.toml keys as section.key (sections and `key =` lines; comments ignored).
keys, section = set(), None
for line in example.splitlines():
    line = line.split("#", 1)[0].strip()
    m = re.match(r"^\[([a-z_.]+)\]$", line)
    if m:
        section = m.group(1)
    elif "=" in line and section:
        keys.add(f"{section}.{line.split('=', 1)[0].strip()}")


def volume_mount(vol):
    """(source, target) of a short (`src:dst[:mode]`) or long (`{source, target}`) volume."""
    if isinstance(vol, dict):
        return str(vol.get("source", "")), str(vol.get("target", ""))
    m = re.match(r"^((?:\$\{[^}]*\}|[^:$]|\$(?!\{))*)(?::([^:]*))?", str(vol))
    return m.group(1), m.group(2) or ""


errors = []
services = compose.get("services", {})
networks = set(compose.get("networks", {}) or {}) | {"default"}
volumes = set(compose.get("volumes", {}) or {})
for name, svc in services.items():
    if "image" not in svc and "build" not in svc:
        errors.append(f"{name}: neither image nor build")
    deps = svc.get("depends_on", [])
    for dep in deps if isinstance(deps, list) else deps.keys():
        if dep not in services:
            errors.append(f"{name}: depends on unknown service {dep}")
    nets = svc.get("networks", [])
    for net in nets if isinstance(nets, list) else nets.keys():
        if net not in networks:
            errors.append(f"{name}: unknown network {net}")
    for vol in svc.get("volumes", []):
        src = volume_mount(vol)[0]
        if not src.startswith(("/", ".", "$")) and src not in volumes:
            errors.append(f"{name}: unknown volume {src}")
    env = svc.get("environment", {}) or {}
    for var in env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]:
        m = re.match(r"^DICOM_PIPELINE_([A-Z]+)__([A-Z_]+)$", var)
        if m and f"{m.group(1).lower()}.{m.group(2).lower()}" not in keys:
            errors.append(f"{name}: {var} is not a configuration key")

# The compose stack runs the Kafka version the tests and benchmarks run (scripts/dev/kafka/pom.xml).
with open(os.path.join(root, "scripts", "dev", "kafka", "pom.xml")) as f:
    pom = f.read()
pinned = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
kafka_image = (services.get("kafka") or {}).get("image", "")
if not pinned or kafka_image != f"apache/kafka:{pinned.group(1)}":
    errors.append(
        f"kafka: image {kafka_image!r} is not apache/kafka:<the version in scripts/dev/kafka/pom.xml, "
        f"{pinned.group(1) if pinned else 'missing'}>"
    )

doris = {n: s for n, s in services.items() if "doris" in (s.get("profiles") or [])}
images = sorted(s.get("image", "") for s in doris.values())
if not any(i.startswith("apache/doris:fe-") for i in images) or not any(
    i.startswith("apache/doris:be-") for i in images
):
    errors.append(f"profile doris: needs apache/doris fe and be images, has {images}")
runs = [s for s in doris.values() if (s.get("command") or [None])[0] == "run"]
if not runs or any(
    (s.get("environment") or {}).get("DICOM_PIPELINE_SINK__BACKEND") != "doris" for s in runs
):
    errors.append("profile doris: a `run` service with DICOM_PIPELINE_SINK__BACKEND=doris")
for name, svc in services.items():
    if name not in doris and "doris" in name:
        errors.append(f"{name}: not in the doris profile")


# --- metrics: Prometheus + Grafana (deploy/) ---------------------------------------------
# The metric names the Rust side exports (keep in step with it). The histogram is scraped as its
# _bucket/_sum/_count series only.
COUNTERS = {
    "dicom_pipeline_messages_consumed_total",
    "dicom_pipeline_messages_produced_total",
    "dicom_pipeline_publish_errors_total",
    "dicom_pipeline_consume_errors_total",
    "dicom_pipeline_dlq_records_total",
    "dicom_pipeline_sink_rows_total",
    "dicom_pipeline_sink_errors_total",
    "dicom_pipeline_storage_secondary_hits_total",
    "dicom_pipeline_file_read_retries_total",
    "dicom_pipeline_state_records_refused_total",
}
HISTOGRAMS = {"dicom_pipeline_stage_duration_seconds"}
GAUGES = {
    "dicom_pipeline_in_flight",
    "dicom_pipeline_partition_committed_offset",
    "dicom_pipeline_partition_watermark_gap",
    "dicom_pipeline_partition_lag",
    "dicom_pipeline_assigned_partitions",
    "dicom_pipeline_ready",
    "dicom_pipeline_storage_root_available",
}
METRICS = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:])dicom_pipeline_[A-Za-z0-9_:]*")
VARIABLE_RE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)(?::[^}]*)?\}|([A-Za-z0-9_]+))")


def bind_mounts(svc):
    """(host path in the repository, container target) of a service's relative bind mounts."""
    out = []
    for vol in svc.get("volumes", []) or []:
        src, dst = volume_mount(vol)
        if src.startswith(("./", "../")) or src == ".":
            out.append((os.path.normpath(os.path.join(root, src)), dst.rstrip("/") or "/"))
    return out


def under(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def host_path(mounts, target):
    """The repository path mounted at container path `target` (a mount of it or of a parent)."""
    for src, dst in sorted(mounts, key=lambda m: -len(m[1])):
        if under(target, dst):
            return os.path.join(src, os.path.relpath(target, dst)) if target != dst else src
    return None


def load_yaml(path, what):
    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        errors.append(f"{what}: {os.path.relpath(path, root)}: {e}")
        return {}


def yaml_files(directory):
    if not directory or not os.path.isdir(directory):
        return []
    return sorted(
        os.path.join(directory, f) for f in os.listdir(directory) if f.endswith((".yml", ".yaml"))
    )


for name in ("prometheus", "grafana"):
    if name not in services:
        errors.append(f"service {name} is missing")
for name, svc in services.items():
    for src, _ in bind_mounts(svc):
        if not os.path.exists(src):
            errors.append(f"{name}: bind-mounted {os.path.relpath(src, root)} does not exist")

# Services that serve /metrics: {name: port} from DICOM_PIPELINE_METRICS__LISTEN.
listens = {}
for name, svc in services.items():
    env = svc.get("environment", {}) or {}
    if not isinstance(env, dict):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    listen = env.get("DICOM_PIPELINE_METRICS__LISTEN")
    if listen is None:
        continue
    m = re.match(r"^(\[[^\]]*\]|[^:]*):([0-9]+)$", str(listen))
    if not m:
        errors.append(f"{name}: DICOM_PIPELINE_METRICS__LISTEN={listen!r} is not host:port")
        continue
    if m.group(1) in ("127.0.0.1", "localhost", "[::1]", ""):
        errors.append(
            f"{name}: DICOM_PIPELINE_METRICS__LISTEN={listen}: not reachable from other containers"
        )
    listens[name] = int(m.group(2))
if "pipeline" not in listens:
    errors.append("pipeline: DICOM_PIPELINE_METRICS__LISTEN is not set")

# Prometheus: the dicom-pipeline job scrapes those services on their port.
prom_svc = services.get("prometheus") or {}
prom_mounts = bind_mounts(prom_svc)
prom_args = prom_svc.get("command") or []
prom_args = prom_args.split() if isinstance(prom_args, str) else prom_args
prom_config = next(
    (a.split("=", 1)[1] for a in prom_args if str(a).startswith("--config.file=")),
    "/etc/prometheus/prometheus.yml",
)
prom_port = next(
    (str(a).rsplit(":", 1)[1] for a in prom_args if str(a).startswith("--web.listen-address=")),
    "9090",
)
prom_file = host_path(prom_mounts, prom_config) if prom_svc else None
if prom_svc and not prom_file:
    errors.append(f"prometheus: no repository file is mounted at {prom_config}")
elif prom_file and os.path.isfile(prom_file):
    prom = load_yaml(prom_file, "prometheus")
    jobs = [j for j in prom.get("scrape_configs") or [] if j.get("job_name") == "dicom-pipeline"]
    if len(jobs) != 1:
        errors.append(f"prometheus: {len(jobs)} scrape jobs named dicom-pipeline, want 1")
    for job in jobs:
        if job.get("metrics_path", "/metrics") != "/metrics":
            errors.append(
                f"prometheus: job dicom-pipeline scrapes {job.get('metrics_path')}, not /metrics"
            )
        names = set()
        for sd in job.get("dns_sd_configs") or []:
            if sd.get("type") not in ("A", "AAAA"):
                errors.append(
                    f"prometheus: dns_sd_configs type {sd.get('type')!r}: Docker's DNS answers A"
                )
            for n in sd.get("names") or []:
                names.add(n)
                if n not in listens:
                    errors.append(
                        f"prometheus: scrapes {n}: no service with DICOM_PIPELINE_METRICS__LISTEN"
                    )
                elif sd.get("port") != listens[n]:
                    port = sd.get("port")
                    errors.append(f"prometheus: scrapes {n} on {port}, it listens on {listens[n]}")
        if "pipeline" not in names:
            errors.append("prometheus: job dicom-pipeline: no dns_sd_configs name `pipeline`")

# Grafana: provisioned data source(s), dashboard provider(s), dashboards.
graf_svc = services.get("grafana") or {}
graf_mounts = bind_mounts(graf_svc)
ds_files = yaml_files(host_path(graf_mounts, "/etc/grafana/provisioning/datasources"))
db_files = yaml_files(host_path(graf_mounts, "/etc/grafana/provisioning/dashboards"))
if graf_svc and not ds_files:
    errors.append(
        "grafana: no data source file is mounted in /etc/grafana/provisioning/datasources"
    )
if graf_svc and not db_files:
    errors.append(
        "grafana: no dashboard provider file is mounted in /etc/grafana/provisioning/dashboards"
    )
prom_uids = set()
for path in ds_files:
    for ds in load_yaml(path, "grafana").get("datasources") or []:
        if ds.get("type") != "prometheus":
            continue
        if not ds.get("uid"):
            errors.append(
                f"grafana: data source {ds.get('name')!r} has no uid (panels cannot name it)"
            )
            continue
        prom_uids.add(ds["uid"])
        url = urlsplit(str(ds.get("url", "")))
        if url.hostname not in services or str(url.port or 80) != prom_port:
            errors.append(
                f"grafana: data source {ds.get('name')!r}: url {ds.get('url')!r} is not "
                f"a compose service on Prometheus's port {prom_port}"
            )
if graf_svc and not prom_uids:
    errors.append("grafana: no Prometheus data source is provisioned")
dashboards = set()
for path in db_files:
    for prov in load_yaml(path, "grafana").get("providers") or []:
        target = str((prov.get("options") or {}).get("path", "")).rstrip("/")
        found = set()
        for src, dst in graf_mounts:
            if under(dst, target) and os.path.isfile(src) and src.endswith(".json"):
                found.add(src)
            elif under(dst, target) and os.path.isdir(src):
                found.update(
                    os.path.join(d, f)
                    for d, _, fs in os.walk(src)
                    for f in fs
                    if f.endswith(".json")
                )
        if not found:
            errors.append(
                f"grafana: dashboard provider {prov.get('name')!r}: no JSON mounted in {target!r}"
            )
        dashboards |= found


def walk(node):
    """Yield (key, value) for every dict entry below node, depth first."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def all_panels(panels):
    for p in panels or []:
        yield p
        yield from all_panels(p.get("panels"))


for path in sorted(dashboards):
    rel = os.path.relpath(path, root)
    try:
        with open(path) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        errors.append(f"{rel}: {e}")
        continue
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list") or []}
    ds_vars = {
        n
        for n, v in variables.items()
        if v.get("type") == "datasource" and v.get("query") == "prometheus"
    }
    for n in ds_vars:
        current = (variables[n].get("current") or {}).get("value")
        if current and current not in prom_uids:
            errors.append(
                f"{rel}: variable {n} defaults to {current!r}, provisioned: {sorted(prom_uids)}"
            )
    allowed_uids = prom_uids | {f"${n}" for n in ds_vars} | {f"${{{n}}}" for n in ds_vars}

    # PromQL: panel/annotation `expr`s and the query variables' queries.
    exprs = [
        (f"panel {p.get('id')} {p.get('title')!r}", t.get("expr") or "")
        for p in all_panels(dash.get("panels"))
        for t in p.get("targets") or []
    ]
    exprs += [("annotations", v) for k, v in walk(dash.get("annotations")) if k == "expr"]
    for n, v in variables.items():
        if v.get("type") == "query":
            q = v.get("query")
            exprs.append(
                (f"variable {n}", q.get("query", "") if isinstance(q, dict) else str(q or ""))
            )
    used = set()
    for where, expr in exprs:
        if not expr.strip():
            errors.append(f"{rel}: {where}: empty query")
        for metric in METRIC_RE.findall(expr):
            used.add(metric)
            if metric not in METRICS:
                errors.append(f"{rel}: {where}: unknown metric {metric}")
        # rate()/irate()/increase() are for counters: over a gauge they are meaningless
        # (a committed offset is a gauge: deriv() gives its speed).
        for fn, metric in re.findall(r"\b(rate|irate|increase)\s*\(\s*(dicom_pipeline_[A-Za-z0-9_:]*)", expr):
            if metric in GAUGES:
                errors.append(f"{rel}: {where}: {fn}() over the gauge {metric} (use deriv() or a counter)")
        for m in VARIABLE_RE.finditer(expr):
            var = m.group(1) or m.group(2)
            if not var.startswith("__") and var not in variables:
                errors.append(f"{rel}: {where}: undefined variable ${var}")
    for metric in sorted(
        METRICS - used - {f"{h}_sum" for h in HISTOGRAMS} - {f"{h}_count" for h in HISTOGRAMS}
    ):
        errors.append(f"{rel}: no panel shows {metric}")

    # Data sources: every panel with queries, every query and query variable names the
    # provisioned Prometheus uid or the Prometheus `datasource` variable.
    ids = [p.get("id") for p in all_panels(dash.get("panels"))]
    if len(ids) != len(set(ids)):
        errors.append(f"{rel}: duplicate panel ids")
    holders = [
        (f"panel {p.get('id')} {p.get('title')!r}", p)
        for p in all_panels(dash.get("panels"))
        if p.get("targets")
    ]
    holders += [
        (f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t)
        for p in all_panels(dash.get("panels"))
        for t in p.get("targets") or []
        if "datasource" in t
    ]
    holders += [(f"variable {n}", v) for n, v in variables.items() if v.get("type") == "query"]
    for where, holder in holders:
        ds = holder.get("datasource")
        if not isinstance(ds, dict):
            errors.append(f"{rel}: {where}: datasource {ds!r} is not a {{type, uid}} reference")
        elif ds.get("type") != "prometheus" or ds.get("uid") not in allowed_uids:
            errors.append(f"{rel}: {where}: datasource {ds} is neither of {sorted(allowed_uids)}")
if graf_svc and not dashboards:
    errors.append("grafana: no dashboard is provisioned")

for e in errors:
    print(f"check-compose: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(
    f"check-compose: ok ({len(services)} services, {len(doris)} in profile doris, "
    f"{len(dashboards)} dashboard(s), scrape port {listens.get('pipeline')})"
)
