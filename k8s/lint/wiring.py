"""Wiring checks over rendered manifests: what schemas and policy scanners cannot see.

Each check takes the rendered objects and returns a list of problems (empty: passed):
- services_select_pods: every Service selects pods some workload runs, on ports they declare;
- probes_hit_ports: every HTTP/TCP/gRPC probe names a port its own container declares;
- references_exist: every ConfigMap, Secret, PersistentVolumeClaim, HPA target and PDB
  selector refers to an object in the manifests (and the keys it names exist);
- scrape_annotations: every pod says whether Prometheus scrapes it, on a declared port;
- network_flows: the flows the NetworkPolicies allow, computed pod by pod, equal the table in
  docs/kubernetes.md exactly (nothing missing, nothing extra);
- shield_pools: every backend of the shield's config is a Service port in the manifests;
- shield_config_check: the shield's config passes `dime-edge check`, with the Services' names
  resolving (a private /etc/hosts in a mount namespace);
- command_line_problems: each container's dime-edge or dime-origin command line parses with
  the real binary (every flag known, every value valid).
"""

import ipaddress
import os
import pathlib
import re
import subprocess
import tempfile
import tomllib

import yaml

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
REPO = pathlib.Path(__file__).resolve().parents[2]
FLOWS_DOC = REPO / "docs" / "kubernetes.md"
SHIELD_CONFIGMAP = ("dime", "shield-config", "edge.toml")

# Peers outside the manifests, as the NetworkPolicies and the flows table name them. Pods
# in the manifests get addresses from a pod network that the overlay's range does not overlap.
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
EXTERNAL = [
    # name, namespace (None: not a pod), pod labels, address, ports it listens on
    ("edges", None, {}, "10.8.0.10", []),
    ("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, "10.244.200.1", []),
    ("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.244.200.2",
     [(53, "UDP", "dns"), (53, "TCP", "dns-tcp")]),
    ("other-pod", "default", {"app": "other"}, "10.244.200.3", [(8080, "TCP", "http")]),
    ("internet", None, {}, "203.0.113.7", [(443, "TCP", "https")]),
]


def load(text):
    """The objects of a multi-document YAML text."""
    return [d for d in yaml.safe_load_all(text) if d]


def name_of(obj):
    meta = obj.get("metadata", {})
    return f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " ")


def ns_of(obj):
    return obj.get("metadata", {}).get("namespace", "default")


def pod_templates(objects):
    """(workload, namespace, pod spec, pod labels, pod annotations) for every workload."""
    out = []
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            template = obj["spec"]["template"]
            meta = template.get("metadata", {})
            out.append((obj, ns_of(obj), template["spec"], meta.get("labels", {}),
                        meta.get("annotations", {})))
    return out


def containers(pod_spec):
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def matches(selector, labels):
    """Whether a label selector (matchLabels, matchExpressions, or a plain map) selects labels."""
    if selector is None:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def index(objects, kind):
    return {(ns_of(o), o["metadata"]["name"]): o for o in objects if o["kind"] == kind}


def declared_ports(pod_spec):
    """(container name, port number, protocol, port name) of every container port."""
    return [(c["name"], p["containerPort"], p.get("protocol", "TCP"), p.get("name"))
            for c in pod_spec.get("containers", []) for p in c.get("ports", [])]


# --- checks ---------------------------------------------------------------------------------


def services_select_pods(objects):
    problems = []
    pods = pod_templates(objects)
    for svc in (o for o in objects if o["kind"] == "Service"):
        selector = svc["spec"].get("selector")
        if not selector:
            problems.append(f"{name_of(svc)}: no selector (its endpoints would be managed by hand)")
            continue
        selected = [p for p in pods if p[1] == ns_of(svc) and matches(selector, p[3])]
        if not selected:
            problems.append(f"{name_of(svc)}: selector {selector} matches no pod of any workload")
            continue
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            protocol = port.get("protocol", "TCP")
            for workload, _, spec, _, _ in selected:
                ok = any((target == number or target == pname) and proto == protocol
                         for _, number, proto, pname in declared_ports(spec))
                if not ok:
                    problems.append(
                        f"{name_of(svc)}: port {port.get('name', port['port'])} targets "
                        f"{target}/{protocol}, which {name_of(workload)} declares in no container")
    return problems


def probes_hit_ports(objects):
    problems = []
    for workload, _, spec, _, _ in pod_templates(objects):
        for c in containers(spec):
            ports = [(p["containerPort"], p.get("name")) for p in c.get("ports", [])]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                if handler is None:
                    continue  # exec: no port
                port = handler.get("port")
                if not any(port == number or port == pname for number, pname in ports):
                    problems.append(
                        f"{name_of(workload)}: container {c['name']} {kind} uses port {port!r}, "
                        f"which the container does not declare ({ports})")
    return problems


def references_exist(objects):
    problems = []
    configmaps, secrets = index(objects, "ConfigMap"), index(objects, "Secret")
    claims = index(objects, "PersistentVolumeClaim")

    def need(where, table, kind, ns, name, keys=()):
        obj = table.get((ns, name))
        if obj is None:
            problems.append(f"{where}: {kind} {ns}/{name} is not in the manifests")
            return
        data = dict(obj.get("data") or {}, **(obj.get("binaryData") or {}))
        data.update(obj.get("stringData") or {})
        for key in keys:
            if key not in data:
                problems.append(f"{where}: {kind} {ns}/{name} has no key {key!r}")

    for workload, ns, spec, _, _ in pod_templates(objects):
        where = name_of(workload)
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in spec.get("volumes", []):
            if "configMap" in v:
                need(where, configmaps, "ConfigMap", ns, v["configMap"]["name"],
                     [i["key"] for i in v["configMap"].get("items", [])])
            if "secret" in v:
                need(where, secrets, "Secret", ns, v["secret"]["secretName"],
                     [i["key"] for i in v["secret"].get("items", [])])
            if "persistentVolumeClaim" in v:
                need(where, claims, "PersistentVolumeClaim", ns, v["persistentVolumeClaim"]["claimName"])
            for source in (v.get("projected") or {}).get("sources", []):
                if "configMap" in source:
                    need(where, configmaps, "ConfigMap", ns, source["configMap"]["name"])
                if "secret" in source:
                    need(where, secrets, "Secret", ns, source["secret"]["name"])
        for c in containers(spec):
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in templates:
                    problems.append(f"{where}: container {c['name']} mounts {mount['name']!r}, "
                                    f"which is neither a volume nor a volumeClaimTemplate")
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    need(where, configmaps, "ConfigMap", ns, src["configMapRef"]["name"])
                if "secretRef" in src:
                    need(where, secrets, "Secret", ns, src["secretRef"]["name"])
            for env in c.get("env", []):
                ref = env.get("valueFrom") or {}
                if "configMapKeyRef" in ref:
                    need(where, configmaps, "ConfigMap", ns, ref["configMapKeyRef"]["name"],
                         [ref["configMapKeyRef"]["key"]])
                if "secretKeyRef" in ref:
                    need(where, secrets, "Secret", ns, ref["secretKeyRef"]["name"],
                         [ref["secretKeyRef"]["key"]])
    workloads = {(ns_of(o), o["kind"], o["metadata"]["name"]) for o in objects
                 if o["kind"] in WORKLOAD_KINDS}
    pods = pod_templates(objects)
    for obj in objects:
        if obj["kind"] == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            if (ns_of(obj), ref["kind"], ref["name"]) not in workloads:
                problems.append(f"{name_of(obj)}: scales {ref['kind']} {ref['name']}, not in the manifests")
        if obj["kind"] == "PodDisruptionBudget":
            if not any(p[1] == ns_of(obj) and matches(obj["spec"].get("selector"), p[3]) for p in pods):
                problems.append(f"{name_of(obj)}: selector matches no pod of any workload")
        if obj["kind"] in WORKLOAD_KINDS:
            if not matches(obj["spec"]["selector"], obj["spec"]["template"]["metadata"].get("labels", {})):
                problems.append(f"{name_of(obj)}: spec.selector does not match its pod template's labels")
    return problems


def scrape_annotations(objects):
    problems = []
    for workload, _, spec, _, annotations in pod_templates(objects):
        scrape = annotations.get("prometheus.io/scrape")
        if scrape not in ("true", "false"):
            problems.append(f"{name_of(workload)}: pod template needs prometheus.io/scrape \"true\" or "
                            f"\"false\" (got {scrape!r})")
            continue
        if scrape == "true":
            port = annotations.get("prometheus.io/port", "")
            if not any(str(number) == port for _, number, _, _ in declared_ports(spec)):
                problems.append(f"{name_of(workload)}: prometheus.io/port {port!r} is not a declared container port")
    return problems


# --- network flows --------------------------------------------------------------------------


def endpoints(objects):
    """Every pod (by its app.kubernetes.io/name) and outside peer, with ports and address."""
    namespaces = {"monitoring": {}, "kube-system": {}, "default": {}}
    for obj in objects:
        if obj["kind"] == "Namespace":
            namespaces[obj["metadata"]["name"]] = obj["metadata"].get("labels", {})
    out = []
    hosts = POD_NETWORK.hosts()
    for workload, ns, spec, labels, _ in pod_templates(objects):
        name = labels.get("app.kubernetes.io/name", workload["metadata"]["name"])
        ports = [(n, proto, pname) for _, n, proto, pname in declared_ports(spec)]
        out.append(dict(name=name, ns=ns, labels=labels, ip=ipaddress.ip_address(next(hosts)),
                        ports=ports, inside=True))
    for name, ns, labels, ip, ports in EXTERNAL:
        out.append(dict(name=name, ns=ns, labels=labels, ip=ipaddress.ip_address(ip), ports=ports,
                        inside=False))
    for e in out:
        if e["ns"] is not None:
            e["ns_labels"] = dict(namespaces.get(e["ns"], {}), **{"kubernetes.io/metadata.name": e["ns"]})
    return out


def peer_matches(peer, policy_ns, endpoint):
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        if endpoint["ip"] not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(endpoint["ip"] in ipaddress.ip_network(e) for e in block.get("except", []))
    if endpoint["ns"] is None:
        return False  # selectors only ever select pods
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"] or {}, endpoint["ns_labels"]):
            return False
    elif endpoint["ns"] != policy_ns:
        return False
    if "podSelector" in peer:
        return matches(peer["podSelector"] or {}, endpoint["labels"])
    return True


def port_matches(rule_ports, port, protocol, port_name):
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None or want == port or want == port_name:
            return True
        if isinstance(want, int) and p.get("endPort") and want <= port <= p["endPort"]:
            return True
    return False


def policy_types(policy):
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])


def allowed(policies, src, dst, port, protocol, port_name):
    def side(endpoint, direction, peer_key, other):
        if not endpoint["inside"]:
            return True
        selecting = [p for p in policies if ns_of(p) == endpoint["ns"]
                     and matches(p["spec"].get("podSelector") or {}, endpoint["labels"])
                     and direction in policy_types(p)]
        if not selecting:
            return True
        for policy in selecting:
            for rule in policy["spec"].get(direction.lower(), []) or []:
                peers = rule.get(peer_key)
                if peers and not any(peer_matches(peer, ns_of(policy), other) for peer in peers):
                    continue
                if port_matches(rule.get("ports"), port, protocol, port_name):
                    return True
        return False

    return side(src, "Egress", "to", dst) and side(dst, "Ingress", "from", src)


def allowed_flows(objects):
    """Every (source, destination, PORT/PROTO) the NetworkPolicies let through."""
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    points = endpoints(objects)
    flows = set()
    for src in points:
        for dst in points:
            if not src["inside"] and not dst["inside"]:
                continue  # between two outside peers: not the manifests' business
            for port, protocol, port_name in dst["ports"]:
                if allowed(policies, src, dst, port, protocol, port_name):
                    flows.add((src["name"], dst["name"], f"{port}/{protocol}"))
    return flows


def documented_flows(text=None):
    """The rows of the flows table between the flows:begin and flows:end markers."""
    text = FLOWS_DOC.read_text(encoding="utf-8") if text is None else text
    match = re.search(r"<!-- flows:begin -->(.*?)<!-- flows:end -->", text, re.S)
    if not match:
        raise ValueError(f"{FLOWS_DOC}: no <!-- flows:begin --> ... <!-- flows:end --> table")
    flows = set()
    for line in match.group(1).splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("From", "") or set(cells[0]) <= set("-: "):
            continue
        flows.add((cells[0], cells[1], cells[2]))
    return flows


def network_flows(objects, documented=None):
    documented = documented_flows() if documented is None else documented
    actual = allowed_flows(objects)
    problems = [f"flow {s} -> {d} {p} is allowed by the NetworkPolicies but not in docs/kubernetes.md"
                for s, d, p in sorted(actual - documented)]
    problems += [f"flow {s} -> {d} {p} is documented in docs/kubernetes.md but the NetworkPolicies deny it"
                 for s, d, p in sorted(documented - actual)]
    return problems


# --- the shield's config --------------------------------------------------------------------


def shield_config(objects):
    ns, name, key = SHIELD_CONFIGMAP
    for obj in objects:
        if obj["kind"] == "ConfigMap" and ns_of(obj) == ns and obj["metadata"]["name"] == name:
            return obj.get("data", {}).get(key)
    return None


def service_names(objects):
    """Every name a pod in the cluster could use for each Service, with the Service."""
    out = {}
    for svc in (o for o in objects if o["kind"] == "Service"):
        name, ns = svc["metadata"]["name"], ns_of(svc)
        for alias in (name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
            out[alias] = svc
    return out


def shield_pools(objects):
    text = shield_config(objects)
    if text is None:
        return ["ConfigMap {}/{} has no key {}".format(*SHIELD_CONFIGMAP)]
    problems = []
    services = service_names(objects)
    for pool, spec in tomllib.loads(text).get("pools", {}).items():
        for backend in spec.get("backends", []):
            addr = backend["addr"] if isinstance(backend, dict) else backend
            host, _, port = addr.rpartition(":")
            svc = services.get(host)
            if svc is None:
                problems.append(f"shield pool {pool}: backend {addr}: no Service named {host!r}")
            elif not any(str(p["port"]) == port for p in svc["spec"].get("ports", [])):
                problems.append(f"shield pool {pool}: backend {addr}: {name_of(svc)} has no port {port}")
    return problems


def shield_config_check(objects, edge_binary):
    """`dime-edge check` on the shield's config, the Services' names resolving to loopback."""
    text = shield_config(objects)
    if text is None:
        return ["ConfigMap {}/{} has no key {}".format(*SHIELD_CONFIGMAP)]
    with tempfile.TemporaryDirectory(prefix="dime-shield-") as tmp:
        config = pathlib.Path(tmp, "edge.toml")
        config.write_text(text, encoding="utf-8")
        hosts = pathlib.Path(tmp, "hosts")
        lines = ["127.0.0.1 localhost"]
        for i, alias in enumerate(sorted(service_names(objects))):
            lines.append(f"127.0.{1 + i // 250}.{1 + i % 250} {alias}")
        hosts.write_text("\n".join(lines) + "\n", encoding="utf-8")
        script = 'mount --bind "$1" /etc/hosts && exec "$2" check -c "$3"'
        unshare = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
        run = subprocess.run(unshare + ["sh", "-c", script, "sh", str(hosts), str(edge_binary), str(config)],
                             capture_output=True, text=True, timeout=60)
        if run.returncode != 0:
            output = (run.stdout + run.stderr).strip().replace(str(config), "shield-config/edge.toml")
            return [f"dime-edge check failed on the shield's config (exit {run.returncode}):\n{output}"]
    return []


def command_lines(objects):
    """(where, binary name, argv after it) of every container that runs dime-edge or dime-origin."""
    out = []
    for workload, _, spec, _, _ in pod_templates(objects):
        for c in containers(spec):
            argv = (c.get("command") or []) + (c.get("args") or [])
            if argv and argv[0] in ("dime-edge", "dime-origin"):
                out.append((f"{name_of(workload)} container {c['name']}", argv[0], argv[1:]))
    return out


def command_line_problems(where, binary, args):
    """Whether the real binary's parser takes `args`: clap checks every flag and value in
    order, so `--help` at the end prints help (exit 0) only when all before it are valid."""
    run = subprocess.run([str(binary)] + args + ["--help"], capture_output=True, text=True,
                         timeout=30, check=False)
    if run.returncode == 0:
        return []
    error = next((l for l in run.stderr.splitlines() if l.startswith("error:")), run.stderr.strip())
    return [f"{where}: {pathlib.Path(binary).name} {' '.join(args)}: {error}"]


def checkov_skips_have_reasons(objects):
    problems = []
    for obj in objects:
        for key, value in (obj.get("metadata", {}).get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = str(value).partition("=")
                if not re.fullmatch(r"CKV2?_K8S_\d+", check.strip()) or len(reason.strip()) < 10:
                    problems.append(f"{name_of(obj)}: {key}: write CKV_K8S_N=the reason, got {value!r}")
    return problems


CHECKS = [services_select_pods, probes_hit_ports, references_exist, scrape_annotations,
          network_flows, shield_pools, checkov_skips_have_reasons]
