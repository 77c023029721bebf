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
# What the stack protects (README "Deployment"): a change that loosens it fails CI.
def env(name):
    e = services[name].get("environment", {})
    return e if isinstance(e, dict) else dict(x.split("=", 1) for x in e)
for name in ("temporal", "vault", "postgresql", "worker"):
    if services[name].get("ports"):
        problems.append(f"{name} must not publish a port (compose network only)")
for port in services["temporal-ui"].get("ports", []):
    if not str(port).startswith("127.0.0.1:"):
        problems.append(f"temporal-ui publishes {port} beyond the host's loopback")
if str(env("temporal-ui").get("TEMPORAL_DISABLE_WRITE_ACTIONS")).lower() != "true":
    problems.append("temporal-ui must be read-only (TEMPORAL_DISABLE_WRITE_ACTIONS)")
if any("-dev" in str(arg) for arg in services["vault"].get("command", [])):
    problems.append("vault runs in -dev mode")
if any(str(arg).startswith("-config") for arg in services["vault"].get("command", [])):
    # The openbao image's entrypoint adds -config=/openbao/config: the file would load twice
    # and its listener bind twice.
    problems.append("vault: leave -config to the image's entrypoint")
bao = open("deploy/vault/openbao.hcl").read()
if "tls_disable" in bao or "tls_cert_file" not in bao or 'storage "raft"' not in bao:
    problems.append("deploy/vault/openbao.hcl must serve TLS and store on raft")
if not env("starter-api").get("CERTFLOW_API_TLS_CERT"):
    problems.append("the starter API must serve HTTPS")
for name, role in (("worker", "certflow_worker"), ("starter-api", "certflow_api")):  # noqa
    url = str(env(name).get("CERTFLOW_AUDIT_DATABASE_URL", ""))
    if not url.startswith(f"postgres://{role}:"):
        problems.append(f"{name} must use the {role} database role")
if env("temporal").get("POSTGRES_USER") != "temporal":
    problems.append("temporal must use its own database role")
grace = str(services["worker"].get("stop_grace_period", "0s"))
if not grace.endswith("s") or int(grace[:-1]) < 120:
    problems.append("worker stop_grace_period must cover the 120 s activity bound")
# Temporal's frontend demands client certificates, and every client of it presents one.
t = env("temporal")
if str(t.get("TEMPORAL_TLS_REQUIRE_CLIENT_AUTH")).lower() != "true" or not t.get("TEMPORAL_TLS_FRONTEND_CERT") \
        or not t.get("TEMPORAL_TLS_CLIENT1_CA_CERT"):
    problems.append("temporal must serve its frontend with mutual TLS (TEMPORAL_TLS_REQUIRE_CLIENT_AUTH, _FRONTEND_CERT, _CLIENT1_CA_CERT)")
for name in ("worker", "starter-api"):
    e = env(name)
    for var in ("TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH", "TEMPORAL_TLS_SERVER_CA_CERT_PATH"):
        if not e.get(var):
            problems.append(f"{name} must connect to Temporal with a client certificate ({var})")
    if not e.get("CERTFLOW_AUTHORIZATION_KEY_FILE"):
        problems.append(f"{name} needs the authorization key (CERTFLOW_AUTHORIZATION_KEY_FILE)")
for name in ("temporal-setup", "temporal-cli"):
    if not env(name).get("TEMPORAL_TLS_CERT"):
        problems.append(f"{name} must connect to Temporal with a client certificate")
ui = env("temporal-ui")
if not ui.get("TEMPORAL_TLS_CERT") or str(ui.get("TEMPORAL_TLS_ENABLE_HOST_VERIFICATION")).lower() != "true":
    problems.append("temporal-ui must present a client certificate and verify the server's")
if not env("worker").get("CERTFLOW_AUDIT_HMAC_KEY_FILE"):
    problems.append("the worker must key the audit trail (CERTFLOW_AUDIT_HMAC_KEY_FILE)")
if not str(env("audit-setup").get("CERTFLOW_AUDIT_DATABASE_URL", "")).startswith("postgres://certflow_audit_owner:"):
    problems.append("audit-setup must migrate the trail as certflow_audit_owner")
configure = open("deploy/vault/configure.sh").read()
if "secret_id_ttl=0" in configure or "secret_id_num_uses" not in configure or "secret_id_bound_cidrs" not in configure:
    problems.append("the worker's AppRole secret_id must be bounded (TTL, uses, CIDR)")
if not env("vault-setup").get("CERTFLOW_WORKER_CIDR"):
    problems.append("vault-setup must bind the worker's secret_id to the stack's network")
if not pathlib.Path(".dockerignore").exists() or "target" not in open(".dockerignore").read():
    problems.append(".dockerignore must keep build output and local state out of the image")
if "scripts/build-release.sh" not in open("Dockerfile").read():
    problems.append("the Dockerfile no longer builds with scripts/build-release.sh")
if problems:
    print("\n".join(problems)); sys.exit(1)
print(f"docker-compose.yml: {len(services)} services, references check out")
PY
