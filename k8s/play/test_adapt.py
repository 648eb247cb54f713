"""Tests of k8s/play/adapt.py, the stand-ins for what `podman kube play` does not run, on the
real rendered dev and camera overlays. `make k8s-lint` runs them; `make k8s-test` plays the
result for real."""

import base64
import copy
import pathlib
import subprocess

import pytest
import yaml

import adapt

REPO = pathlib.Path(__file__).resolve().parents[2]
SUBNET = "10.89.64.0/24"


def render(overlay):
    run = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    return list(yaml.safe_load_all(run.stdout))


@pytest.fixture(scope="module")
def rendered_dev():
    return render("dev")


@pytest.fixture
def dev(rendered_dev):
    return copy.deepcopy(rendered_dev)


def find(docs, kind, name):
    return next(d for d in docs if d and d["kind"] == kind and d["metadata"]["name"] == name)


def pod_spec(docs, name):
    return find(docs, "Deployment", name)["spec"]["template"]["spec"]


def test_dev_overlay_is_played_with_every_stand_in(dev, tmp_path):
    out, state, report = adapt.adapt(dev, SUBNET, str(tmp_path), ["shield:9090=30090"])
    kinds = {d["kind"] for d in out}
    assert kinds == {"Deployment", "ConfigMap", "PersistentVolumeClaim"}
    addresses = {p["workload"]: p["ip"] for p in state["pods"]}
    assert set(addresses) == {"packager-camera", "shield", "streamers", "web", "postgres"}
    assert len(set(addresses.values())) == 5

    # Every pod resolves every Service name to the one pod it selects.
    for pod in state["pods"]:
        aliases = {name: a["ip"] for a in pod_spec(out, pod["workload"])["hostAliases"] for name in a["hostnames"]}
        assert aliases["streamers"] == addresses["streamers"]
        assert aliases["web.dime.svc.cluster.local"] == addresses["web"]
        assert aliases["live-camera"] == addresses["packager-camera"]
        assert aliases["postgres.dime.svc"] == addresses["postgres"]

    # The StatefulSet is a Deployment with the claim its controller would have made.
    assert "data-postgres-0" in state["claims"]
    find(out, "PersistentVolumeClaim", "data-postgres-0")
    volumes = {v["name"]: v for v in pod_spec(out, "postgres")["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "data-postgres-0"

    # Secrets: decoded files, the pod's group, the volume's mode, mounted by path.
    secret = next(d for d in dev if d and d["kind"] == "Secret" and d["metadata"]["name"].startswith("web-database"))
    path = pathlib.Path(volumes_of(out, "web")["database"]["hostPath"]["path"])
    assert (path / "url").read_bytes() == base64.b64decode(secret["data"]["url"])
    assert (path / "url").read_bytes().startswith(b"postgres://dime:")

    # emptyDirs are the pod's own, and the mounts follow the rename.
    names = [v["name"] for d in out if d["kind"] == "Deployment"
             for v in d["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v]
    assert len(names) == len(set(names))
    assert "postgres-tmp" in names
    mounts = [m["name"] for c in pod_spec(out, "postgres")["containers"] for m in c["volumeMounts"]]
    assert "postgres-tmp" in mounts and "tmp" not in mounts

    # The NodePort and the published admin port, on loopback only.
    ports = {p["containerPort"]: p for p in pod_spec(out, "shield")["containers"][0]["ports"]}
    assert (ports[8080]["hostPort"], ports[8080]["hostIP"]) == (30080, "127.0.0.1")
    assert ports[9090]["hostPort"] == 30090

    # What is not run is said, one line each.
    policies = [d["metadata"]["name"] for d in dev if d and d["kind"] == "NetworkPolicy"]
    for name in policies:
        assert any(line.startswith(f"not run: NetworkPolicy/{name} ") for line in report), name
    assert any("StatefulSet/postgres" in line for line in report)


def volumes_of(docs, workload):
    return {v["name"]: v for v in pod_spec(docs, workload)["volumes"]}


def test_a_service_that_remaps_its_port_is_refused(dev, tmp_path):
    service = find(dev, "Service", "web")
    service["spec"]["ports"][0]["port"] = 80
    with pytest.raises(adapt.AdaptError, match=r"Service/web: port 80 forwards to 8083"):
        adapt.adapt(dev, SUBNET, str(tmp_path), [])


def test_a_service_selecting_no_workload_is_refused(dev, tmp_path):
    find(dev, "Service", "streamers")["spec"]["selector"] = {"app.kubernetes.io/name": "nothing"}
    with pytest.raises(adapt.AdaptError, match=r"Service/streamers: selects 0 workloads"):
        adapt.adapt(dev, SUBNET, str(tmp_path), [])


def test_a_kind_nothing_runs_is_refused():
    # The camera overlay's device plugin is a DaemonSet: podman would silently skip it.
    with pytest.raises(adapt.AdaptError, match=r"DaemonSet/smarter-device-manager.*cannot run a DaemonSet"):
        adapt.adapt(render("camera"), SUBNET, "/nonexistent", [])


def test_a_secret_the_manifests_lack_is_refused(dev, tmp_path):
    dev = [d for d in dev if not (d and d["kind"] == "Secret" and d["metadata"]["name"].startswith("web-database"))]
    with pytest.raises(adapt.AdaptError, match=r"web: volume database names Secret/web-database-"):
        adapt.adapt(dev, SUBNET, str(tmp_path), [])


def test_only_chosen_ports_are_published(dev, tmp_path):
    # podman 4.3 publishes every declared container port on the host: none may be left but
    # the NodePort and the admin port, and the probes keep working by number.
    out, _, _ = adapt.adapt(dev, SUBNET, str(tmp_path), ["shield:9090=30090"])
    published = sorted((c["name"], p["containerPort"], p["hostPort"], p["hostIP"])
                       for d in out if d["kind"] == "Deployment"
                       for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", []))
    assert published == [("shield", 8080, 30080, "127.0.0.1"), ("shield", 9090, 30090, "127.0.0.1")]
    streamer = pod_spec(out, "streamers")["containers"][0]
    assert streamer["readinessProbe"]["httpGet"]["port"] == 8081
