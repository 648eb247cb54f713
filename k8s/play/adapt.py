"""Turns a rendered overlay into what `podman kube play` (podman 4.3) can run, and says what it
changed. k8s/play/up.sh runs it; docs/kubernetes.md#podman explains each rule.

podman runs Deployments, ConfigMaps and PersistentVolumeClaims from Kubernetes YAML. For the
rest, this script does what the cluster would have done, or says that nothing does it:

- Deployment: kept, one pod each (podman ignores `replicas`); every pod gets a fixed address
  on the podman network, in the order of the file.
- StatefulSet: played as a Deployment; each volumeClaimTemplate becomes the claim
  `TEMPLATE-NAME-0`, as the StatefulSet controller names it.
- Service: podman has no Services and no cluster DNS. Each Service name (`NAME`,
  `NAME.NAMESPACE`, `NAME.NAMESPACE.svc`, `NAME.NAMESPACE.svc.cluster.local`) is written into
  every pod's /etc/hosts (`hostAliases`) with the address of the one pod it selects; a Service
  whose port differs from its target port cannot be mapped so and is an error. A NodePort is
  published on 127.0.0.1:NODEPORT (`hostPort`), as a node's port would be.
- Secret: podman 4.3 writes a Secret volume's data still base64-encoded, and crashes on one
  without `optional`; each Secret is decoded into a directory (mode and group from the pod's
  `defaultMode` and `fsGroup`), mounted read-only as a hostPath volume.
- Ports: podman 4.3 publishes every declared container port on all of the host's addresses;
  only the NodePort and the --publish ports are kept (on 127.0.0.1), and probes that name a
  port get its number.
- emptyDir: podman names it after the volume, shared by every pod that uses the same name;
  each is renamed `WORKLOAD-VOLUME`, so it stays the pod's own. up.sh makes each one
  world-writable (0777), as the kubelet makes an emptyDir; `medium: Memory` and
  `sizeLimit` are not applied.
- Namespace, NetworkPolicy, PodDisruptionBudget, HorizontalPodAutoscaler: not run (podman
  has no namespaces, no policy enforcement, no eviction API, no autoscaler); listed.
- Any other kind is an error: nothing would run it.

Usage: adapt.py RENDERED.yaml --out PLAY.yaml --state STATE.json --secrets DIR
       --subnet 10.89.64.0/24 [--publish WORKLOAD:PORT=HOSTPORT ...]
"""

import argparse
import base64
import copy
import ipaddress
import json
import os
import sys

import yaml

NOT_RUN = {
    "Namespace": "podman has no namespaces",
    "NetworkPolicy": "podman enforces no NetworkPolicy: every pod can reach every other",
    "PodDisruptionBudget": "podman has no eviction API",
    "HorizontalPodAutoscaler": "podman has no autoscaler",
}


class AdaptError(Exception):
    pass


def workload_pod(doc):
    return doc["spec"]["template"]


def named_port(container, port):
    """The container port number a Service's targetPort names (a number or a port name)."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return declared["containerPort"]
    return None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def adapt(docs, subnet, secrets_dir, publish):
    network = ipaddress.ip_network(subnet)
    first_host = network.network_address + 10
    report = []
    out = []
    workloads = []  # (name, doc)
    services = []
    secrets = {}
    configmaps = {}
    claims = []
    empty_dirs = []

    for doc in docs:
        if not doc:
            continue
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        where = f"{kind}/{name}"
        if kind in NOT_RUN:
            report.append(f"not run: {where} ({NOT_RUN[kind]})")
        elif kind == "ConfigMap":
            configmaps[name] = doc
            out.append(doc)
        elif kind == "Secret":
            secrets[name] = doc
        elif kind == "PersistentVolumeClaim":
            claims.append(name)
            out.append(doc)
        elif kind == "Service":
            services.append(doc)
        elif kind == "Deployment":
            replicas = doc["spec"].get("replicas", 1)
            if replicas != 1:
                report.append(f"runs 1 pod of {replicas}: {where} (podman ignores replicas)")
            workloads.append((name, copy.deepcopy(doc)))
        elif kind == "StatefulSet":
            deployment = copy.deepcopy(doc)
            deployment["kind"] = "Deployment"
            spec = deployment["spec"]
            spec.pop("serviceName", None)
            spec.pop("podManagementPolicy", None)
            spec.pop("persistentVolumeClaimRetentionPolicy", None)
            spec.pop("updateStrategy", None)
            volumes = spec["template"]["spec"].setdefault("volumes", [])
            for template in spec.pop("volumeClaimTemplates", []):
                claim_name = f"{template['metadata']['name']}-{name}-0"
                claim = {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim_name, "namespace": doc["metadata"].get("namespace")},
                    "spec": template["spec"],
                }
                out.append(claim)
                claims.append(claim_name)
                volumes.append(
                    {"name": template["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}}
                )
                report.append(f"claim {claim_name} for StatefulSet/{name} (its volumeClaimTemplate)")
            report.append(f"played as a Deployment: {where} (podman 4.3 skips StatefulSets)")
            workloads.append((name, deployment))
        else:
            raise AdaptError(f"{where}: podman kube play cannot run a {kind}, and k8s/play/adapt.py has no stand-in for it")

    if not workloads:
        raise AdaptError("no Deployment or StatefulSet in the rendered manifests")
    if len(workloads) > network.num_addresses - 20:
        raise AdaptError(f"{len(workloads)} pods do not fit in {subnet}")

    addresses = {name: str(first_host + i) for i, (name, _) in enumerate(workloads)}

    # Services: one pod each, by address, into every pod's /etc/hosts.
    aliases = {}
    node_ports = {}  # workload -> [(containerPort, nodePort)]
    for service in services:
        name = service["metadata"]["name"]
        namespace = service["metadata"].get("namespace", "default")
        selector = service["spec"].get("selector", {})
        chosen = [w for w, d in workloads if selects(selector, workload_pod(d)["metadata"].get("labels", {}))]
        if len(chosen) != 1:
            raise AdaptError(
                f"Service/{name}: selects {len(chosen)} workloads ({', '.join(chosen) or 'none'}); "
                "podman can stand in only for a Service with exactly one"
            )
        workload = dict(workloads)[chosen[0]]
        containers = workload_pod(workload)["spec"]["containers"]
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            numbers = {named_port(c, target) for c in containers} - {None}
            if not numbers:
                raise AdaptError(f"Service/{name}: targetPort {target!r} is no port of {chosen[0]}")
            number = numbers.pop()
            if number != port["port"]:
                raise AdaptError(
                    f"Service/{name}: port {port['port']} forwards to {number}; with /etc/hosts "
                    "standing in for the Service both must be the same"
                )
            if port.get("nodePort"):
                node_ports.setdefault(chosen[0], []).append((number, port["nodePort"]))
                report.append(f"NodePort {port['nodePort']} of Service/{name}: published on 127.0.0.1:{port['nodePort']}")
        names = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
        aliases.setdefault(addresses[chosen[0]], []).extend(names)
        report.append(f"Service/{name}: {name} (and .{namespace}.svc.cluster.local) -> {chosen[0]} at {addresses[chosen[0]]}")

    for spec in publish:
        try:
            workload, ports = spec.split(":", 1)
            container_port, host_port = (int(p) for p in ports.split("=", 1))
        except ValueError:
            raise AdaptError(f"--publish {spec!r}: expected WORKLOAD:PORT=HOSTPORT") from None
        if workload not in addresses:
            raise AdaptError(f"--publish {spec!r}: no workload {workload}")
        node_ports.setdefault(workload, []).append((container_port, host_port))
        report.append(f"published: {workload} port {container_port} on 127.0.0.1:{host_port} (like kubectl port-forward)")

    host_aliases = [{"ip": ip, "hostnames": names} for ip, names in sorted(aliases.items())]
    pods = []
    for name, doc in workloads:
        pod = workload_pod(doc)["spec"]
        pod["hostAliases"] = host_aliases + pod.get("hostAliases", [])
        fs_group = pod.get("securityContext", {}).get("fsGroup")
        renamed = {}
        for volume in pod.get("volumes", []):
            if "emptyDir" in volume:
                renamed[volume["name"]] = f"{name}-{volume['name']}"
                volume["name"] = renamed[volume["name"]]
                empty_dirs.append(volume["name"])
            elif "secret" in volume:
                source = volume.pop("secret")
                secret = secrets.get(source["secretName"])
                if secret is None:
                    raise AdaptError(f"{name}: volume {volume['name']} names Secret/{source['secretName']}, which is not in the manifests")
                directory = os.path.join(secrets_dir, source["secretName"])
                write_secret(secret, directory, source.get("defaultMode", 0o644), fs_group)
                volume["hostPath"] = {"path": os.path.abspath(directory), "type": "Directory"}
            elif "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                raise AdaptError(f"{name}: volume {volume['name']} names ConfigMap/{volume['configMap']['name']}, which is not in the manifests")
        ports = dict(node_ports.get(name, []))
        containers = []
        for container in pod.get("initContainers", []) + pod["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in renamed:
                    mount["name"] = renamed[mount["name"]]
            if container.get("env"):
                for variable in container["env"]:
                    if "valueFrom" in variable and "secretKeyRef" in variable["valueFrom"]:
                        raise AdaptError(f"{name}: env {variable['name']} reads a Secret; mount it as a file")
            # podman 4.3 publishes every declared port on the host (hostPort defaults to
            # containerPort): keep only those published on purpose, and name probe ports by
            # number, since their names go with the declarations.
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                for handler in ("httpGet", "tcpSocket"):
                    action = container.get(probe, {}).get(handler)
                    if action and isinstance(action.get("port"), str):
                        number = named_port(container, action["port"])
                        if number is None:
                            raise AdaptError(f"{name}/{container['name']}: {probe} port {action['port']!r} is not declared")
                        action["port"] = number
            kept = []
            for declared in container.get("ports", []):
                if declared["containerPort"] in ports:
                    declared["hostPort"] = ports.pop(declared["containerPort"])
                    declared["hostIP"] = "127.0.0.1"
                    kept.append(declared)
            if kept:
                container["ports"] = kept
            else:
                container.pop("ports", None)
            containers.append(container["name"])
        if ports:
            raise AdaptError(f"{name}: no container declares port(s) {sorted(ports)} to publish")
        out.append(doc)
        pods.append({"workload": name, "pod": f"{name}-pod-0", "ip": addresses[name], "containers": containers})

    report.append("ports: only the NodePort and --publish ports are published (on 127.0.0.1); podman 4.3 would publish every declared port")
    for name in secrets:
        report.append(f"Secret/{name}: decoded into {os.path.join(secrets_dir, name)}, mounted read-only (hostPath)")
    return out, {"pods": pods, "claims": claims, "configmaps": sorted(configmaps), "empty_dirs": empty_dirs}, report


def write_secret(secret, directory, mode, group):
    os.makedirs(directory, mode=0o750, exist_ok=True)
    files = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    files.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    for key, value in files.items():
        path = os.path.join(directory, key)
        with open(path, "wb") as file:
            file.write(value)
        os.chmod(path, mode)
        if group is not None and os.geteuid() == 0:
            os.chown(path, 0, group)
    if group is not None and os.geteuid() == 0:
        os.chown(directory, 0, group)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("--out", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--secrets", required=True)
    parser.add_argument("--subnet", required=True)
    parser.add_argument("--publish", action="append", default=[])
    args = parser.parse_args()
    with open(args.rendered) as file:
        docs = list(yaml.safe_load_all(file))
    try:
        out, state, report = adapt(docs, args.subnet, args.secrets, args.publish)
    except AdaptError as error:
        print(f"k8s-play: error: {args.rendered}: {error}", file=sys.stderr)
        return 1
    with open(args.out, "w") as file:
        yaml.safe_dump_all(out, file, sort_keys=False)
    state["ips"] = [pod["ip"] for pod in state["pods"]]
    with open(args.state, "w") as file:
        json.dump(state, file, indent=2)
    for line in report:
        print(f"k8s-play: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
