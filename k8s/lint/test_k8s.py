"""The wiring of every overlay, and proof that each check of `make k8s-lint` catches a broken
manifest: each mutation test breaks one thing in the rendered YAML and expects that check to
name it. Run by k8s/lint/run.sh (DIME_EDGE: the dime-edge binary for the shield's config)."""

import copy
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

import wiring

HERE = pathlib.Path(__file__).resolve().parent
OVERLAYS = sorted(p.name for p in (wiring.REPO / "k8s" / "overlays").iterdir() if p.is_dir())


def render(overlay):
    run = subprocess.run(["kubectl", "kustomize", str(wiring.REPO / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{run.stderr}"
    return wiring.load(run.stdout)


@pytest.fixture(scope="session")
def rendered():
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture
def dev(rendered):
    return copy.deepcopy(rendered["dev"])


def edge_binary():
    edge = os.environ.get("DIME_EDGE")
    if not edge or not os.access(edge, os.X_OK):
        pytest.fail(f"DIME_EDGE={edge!r}: set it to a built dime-edge (make k8s-lint does)")
    return edge


def find(objects, kind, name):
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"].startswith(name):
            return obj
    raise KeyError(f"{kind} {name}")


def pod(objects, name):
    return find(objects, "Deployment", name)["spec"]["template"]["spec"]


# --- the real manifests ---------------------------------------------------------------------


@pytest.mark.parametrize("check", wiring.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes(rendered, overlay, check):
    problems = check(rendered[overlay])
    assert not problems, f"k8s/overlays/{overlay}:\n" + "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shield_config_passes_dime_edge_check(rendered, overlay):
    problems = wiring.shield_config_check(rendered[overlay], edge_binary())
    assert not problems, f"k8s/overlays/{overlay}:\n" + "\n".join(problems)


def origin_binary():
    origin = os.environ.get("DIME_ORIGIN")
    if not origin or not os.access(origin, os.X_OK):
        pytest.skip(f"DIME_ORIGIN={origin!r} is not a built dime-origin: build the workspace "
                    "(make test does) to check the origins' command lines")
    return origin


def binaries():
    return {"dime-edge": edge_binary(), "dime-origin": origin_binary()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_command_lines_parse(rendered, overlay):
    tools = binaries()
    problems, unchecked = [], []
    for where, name, args in wiring.command_lines(rendered[overlay]):
        if "--db-url-file" in " ".join(args):
            # The flag arrives with the web app's multi-replica work (branch h-web); until the
            # binary has it, the summary says what was not checked instead of failing.
            run = subprocess.run([tools[name], "web", "--help"], capture_output=True, text=True, check=False)
            if "--db-url-file" not in run.stdout:
                unchecked.append(where)
                continue
        problems += wiring.command_line_problems(where, tools[name], args)
    assert not problems, f"k8s/overlays/{overlay}:\n" + "\n".join(problems)
    if unchecked:
        pytest.skip(f"not checked, this dime-origin has no web --db-url-file yet: {', '.join(unchecked)}")


def test_a_misspelt_flag_is_caught(dev):
    args = pod(dev, "packager-camera")["containers"][0]["args"]
    args[args.index("--size=640x360")] = "--sise=640x360"
    where, name, argv = next(c for c in wiring.command_lines(dev) if c[0].endswith("container packager"))
    problems = wiring.command_line_problems(where, binaries()[name], argv)
    assert len(problems) == 1 and "unexpected argument '--sise' found" in problems[0], problems


def test_an_invalid_flag_value_is_caught(dev):
    args = pod(dev, "shield")["containers"][0]["args"]
    args[args.index("--log-format=json")] = "--log-format=yaml"
    where, name, argv = next(c for c in wiring.command_lines(dev) if c[0].endswith("container shield"))
    problems = wiring.command_line_problems(where, binaries()[name], argv)
    assert len(problems) == 1 and "invalid value 'yaml'" in problems[0], problems


def test_camera_overlay_asks_for_the_camera(rendered):
    packager = pod(rendered["camera"], "packager-camera")["containers"][0]
    assert packager["resources"]["limits"]["smarter-devices/video0"] == 1
    assert "--device=/dev/video0" in packager["args"]
    assert "--test-pattern" not in packager["args"]
    assert find(rendered["camera"], "DaemonSet", "smarter-device-manager")
    assert find(rendered["camera"], "ConfigMap", "smarter-device-manager")


def test_dev_overlay_runs_one_of_each(rendered):
    for name in ("streamers", "web", "shield", "packager-camera"):
        assert find(rendered["dev"], "Deployment", name)["spec"]["replicas"] == 1
    assert "--test-pattern" in pod(rendered["dev"], "packager-camera")["containers"][0]["args"]


# --- each check catches what it is for ------------------------------------------------------


def test_a_service_selecting_no_pod_is_caught(dev):
    find(dev, "Service", "streamers")["spec"]["selector"] = {"app.kubernetes.io/name": "streamr"}
    problems = wiring.services_select_pods(dev)
    assert any("Service dime/streamers" in p and "matches no pod" in p for p in problems), problems


def test_a_service_on_an_undeclared_port_is_caught(dev):
    find(dev, "Service", "web")["spec"]["ports"][0]["targetPort"] = "htp"
    problems = wiring.services_select_pods(dev)
    assert any("Service dime/web" in p and "htp" in p for p in problems), problems


def test_a_probe_on_an_undeclared_port_is_caught(dev):
    pod(dev, "shield")["containers"][0]["readinessProbe"]["httpGet"]["port"] = 9091
    problems = wiring.probes_hit_ports(dev)
    assert any("Deployment dime/shield" in p and "readinessProbe" in p and "9091" in p
               for p in problems), problems


def test_a_missing_configmap_is_caught(dev):
    find(dev, "Deployment", "shield")["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "shield-conf"
    problems = wiring.references_exist(dev)
    assert any("ConfigMap dime/shield-conf is not in the manifests" in p for p in problems), problems


def test_a_missing_secret_is_caught(dev):
    dev[:] = [o for o in dev if not (o["kind"] == "Secret" and o["metadata"]["name"].startswith("web-database"))]
    problems = wiring.references_exist(dev)
    assert any("Deployment dime/web" in p and "Secret dime/web-database" in p for p in problems), problems


def test_a_wrong_scrape_port_is_caught(dev):
    find(dev, "Deployment", "shield")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "9191"
    problems = wiring.scrape_annotations(dev)
    assert any("9191" in p for p in problems), problems


def test_an_undocumented_flow_is_caught(dev):
    # Opening the web app to every namespace lets any pod of the cluster in. (Every pod of its
    # own namespace would not be enough: their egress is denied, the shield's excepted.)
    find(dev, "NetworkPolicy", "web-ingress")["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {}}]
    problems = wiring.network_flows(dev)
    assert "flow other-pod -> web 8083/TCP is allowed by the NetworkPolicies but not in docs/kubernetes.md" in problems


def test_a_flow_without_its_policy_is_caught(dev):
    dev[:] = [o for o in dev if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "web-egress")]
    problems = wiring.network_flows(dev)
    assert "flow web -> postgres 5432/TCP is documented in docs/kubernetes.md but the NetworkPolicies deny it" in problems


def test_dropping_default_deny_is_caught(dev):
    dev[:] = [o for o in dev if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "default-deny")]
    problems = wiring.network_flows(dev)
    # The streamers have no egress policy of their own: default-deny was all that held them.
    assert "flow streamer -> internet 443/TCP is allowed by the NetworkPolicies but not in docs/kubernetes.md" in problems


def test_a_shield_backend_without_its_service_is_caught(dev):
    config = find(dev, "ConfigMap", "shield-config")
    config["data"]["edge.toml"] = config["data"]["edge.toml"].replace('"web:8083"', '"webapp:8083"')
    problems = wiring.shield_pools(dev)
    assert any("backend webapp:8083: no Service named 'webapp'" in p for p in problems), problems
    # dime-edge itself cannot resolve the name either.
    problems = wiring.shield_config_check(dev, edge_binary())
    assert len(problems) == 1 and "pools.web.backends[0]" in problems[0], problems


def test_an_invalid_shield_config_is_caught(dev):
    config = find(dev, "ConfigMap", "shield-config")
    config["data"]["edge.toml"] = config["data"]["edge.toml"].replace('grace_period = "10s"', 'grace_period = "10"')
    problems = wiring.shield_config_check(dev, edge_binary())
    assert len(problems) == 1 and "server.grace_period" in problems[0], problems


def test_a_skip_without_a_reason_is_caught(dev):
    find(dev, "Deployment", "web")["metadata"]["annotations"]["checkov.io/skip1"] = "CKV_K8S_43"
    problems = wiring.checkov_skips_have_reasons(dev)
    assert any("Deployment dime/web" in p for p in problems), problems


def run_tool(args, tmp_path, objects):
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(objects), encoding="utf-8")
    return subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=120, check=False)


def test_schema_validation_reports_every_error_and_unknown_kinds(dev, tmp_path):
    shield = find(dev, "Deployment", "shield")
    shield["spec"]["replica"] = 2  # misspelt: only --strict schemas reject it
    shield["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    objects = [find(dev, "Namespace", "dime"), shield, widget]
    run = run_tool([sys.executable, str(HERE / "validate.py"), "--version", "1.37"], tmp_path, objects)
    assert run.returncode == 1, run.stdout
    assert "Deployment dime/shield: spec: Additional properties are not allowed ('replica' was unexpected)" in run.stdout
    assert "Deployment dime/shield: spec.template.spec.containers.0.ports.0.containerPort: '8080' is not of type 'integer'" in run.stdout
    assert "Widget w: unknown kind Widget in example.com/v1 (no schema)" in run.stdout
    assert "1 of 3 object(s) valid against Kubernetes 1.37 (strict), 2 invalid" in run.stdout


def test_checkov_fails_a_weakened_workload(dev, tmp_path):
    shield = find(dev, "Deployment", "shield")
    container = shield["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del shield["metadata"]["annotations"]["checkov.io/skip1"]
    checkov = shutil.which("checkov") or str(pathlib.Path(sys.executable).with_name("checkov"))
    args = [checkov, "--framework", "kubernetes", "--skip-download", "--quiet", "--compact", "-f"]
    run = run_tool(args, tmp_path, [shield])
    assert run.returncode == 1, run.stdout + run.stderr
    assert "CKV_K8S_22" in run.stdout and "CKV_K8S_43" in run.stdout, run.stdout


# --- the Grafana dashboard ------------------------------------------------------------------


def dashboard_metric_problems(dashboard):
    """Metric names the dashboard queries that proxy/src/metrics.rs does not define."""
    source = (wiring.REPO / "proxy" / "src" / "metrics.rs").read_text(encoding="utf-8")
    defined = set(re.findall(r'"(dime_[a-z_]+)"', source))
    problems = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\bdime_[a-z_]+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name not in defined and base not in defined:
                    problems.append(f"panel {panel['title']!r}: {name} is not in proxy/src/metrics.rs")
    return problems


def load_dashboard():
    return json.loads((wiring.REPO / "k8s" / "grafana" / "dime-edges.json").read_text(encoding="utf-8"))


def test_dashboard_queries_real_metrics():
    dashboard = load_dashboard()
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("hit ratio", "offload", "latency", "healthy", "reloads", "certificate"):
        assert topic in titles, f"the dashboard has no {topic} panel"
    assert dashboard_metric_problems(dashboard) == []


def test_a_dashboard_metric_typo_is_caught():
    dashboard = load_dashboard()
    dashboard["panels"][0]["targets"][0]["expr"] += " + dime_cache_hits_total"
    assert dashboard_metric_problems(dashboard) == [
        "panel 'Hit ratio': dime_cache_hits_total is not in proxy/src/metrics.rs"]
