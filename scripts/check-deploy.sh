#!/usr/bin/env bash
# Checks what CI cannot run (no Docker engine): docker-compose.yml against the Compose
# specification's JSON schema, plus the references inside it (services, files, the search
# attributes, the Dockerfile's build script).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v check-jsonschema >/dev/null || python3 -m pip install --quiet check-jsonschema
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
python3 - <<'PY'
import re, sys, yaml, pathlib
compose = yaml.safe_load(open("docker-compose.yml"))
services = compose["services"]
problems = []
for name, svc in services.items():
    deps = svc.get("depends_on", {})
    for dep in (deps if isinstance(deps, list) else deps.keys()):
        if dep not in services:
            problems.append(f"{name} depends on unknown service {dep}")
    for volume in svc.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./") and not pathlib.Path(source).exists():
            problems.append(f"{name} mounts missing {source}")
        elif not source.startswith(("./", "/")) and source not in compose.get("volumes", {}):
            problems.append(f"{name} uses undeclared volume {source}")
    image = svc.get("image", "")
    if image and not svc.get("build") and (":" not in image or image.endswith(":latest")):
        problems.append(f"{name}: pin the image version ({image})")
search = open("common/src/search.rs").read()
registered = open("docker-compose.yml").read()
for name, kind in re.findall(r'\("(Certflow\w+)", "(\w+)"\)', search):
    if f"{name}={kind}" not in registered:
        problems.append(f"search attribute {name}={kind} is not registered by temporal-setup")
if "scripts/build-release.sh" not in open("Dockerfile").read():
    problems.append("the Dockerfile no longer builds with scripts/build-release.sh")
if problems:
    print("\n".join(problems)); sys.exit(1)
print(f"docker-compose.yml: {len(services)} services, references check out")
PY
