#!/usr/bin/env python3
"""Structure check of docker-compose.yml (CI has no Docker engine to run it).

Parses the file (PyYAML, pinned in scripts/reference/requirements.txt: run it with the python
that `scripts/make-expected.sh --venv` prints) and checks that every
service names an image or a build, every `depends_on` / network / named volume it uses is
defined, the `doris` profile has the Apache Doris FE and BE images and a pipeline configured
for the Doris sink, and every DICOM_PIPELINE_* variable names a key of config.example.toml.
"""
import os
import re
import sys

try:
    import yaml
except ImportError:
    sys.exit("check-compose: PyYAML is not installed; run with $(scripts/make-expected.sh --venv)")

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
        src = vol.split(":", 1)[0]
        if not src.startswith(("/", ".", "$")) and src not in volumes:
            errors.append(f"{name}: unknown volume {src}")
    env = svc.get("environment", {}) or {}
    for var in env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]:
        m = re.match(r"^DICOM_PIPELINE_([A-Z]+)__([A-Z_]+)$", var)
        if m and f"{m.group(1).lower()}.{m.group(2).lower()}" not in keys:
            errors.append(f"{name}: {var} is not a configuration key")

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

for e in errors:
    print(f"check-compose: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check-compose: ok ({len(services)} services, {len(doris)} in profile doris)")
