"""The images' side of the contract docs/kubernetes.md states, checked against the manifests
(`make k8s-lint` runs it): each workload runs as the user its image is built for, and the tags
k8s/base names are the ones `make images` builds."""

import pathlib
import re
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
IMAGES = REPO / "k8s" / "images"


def final_user(containerfile):
    """The USER of a Containerfile's last stage, as (uid, gid)."""
    stages = re.split(r"^FROM ", containerfile.read_text(), flags=re.M)
    users = re.findall(r"^USER (\d+):(\d+)\s*$", stages[-1], flags=re.M)
    assert users, f"{containerfile.name}: the last stage sets no numeric USER uid:gid"
    return tuple(int(n) for n in users[-1])


@pytest.fixture(scope="module")
def dev():
    run = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / "dev")],
                         capture_output=True, text=True, timeout=60, check=True)
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def test_every_workload_runs_as_its_images_user(dev):
    checked = set()
    for doc in dev:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            name = container["image"].split("/")[-1].split(":")[0]
            assert name.startswith("dime-"), container["image"]
            uid, gid = final_user(IMAGES / f"{name[len('dime-'):]}.Containerfile")
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert (context.get("runAsUser"), context.get("runAsGroup")) == (uid, gid), \
                f"{doc['metadata']['name']}/{container['name']} runs as {context.get('runAsUser')}:{context.get('runAsGroup')}, its image {name} as {uid}:{gid}"
            assert uid >= 10000
            checked.add(name)
    assert checked == {"dime-edge", "dime-origin", "dime-postgres"}


def test_the_tags_are_the_ones_make_images_builds():
    version = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"',
                        (REPO / "Cargo.toml").read_text(), flags=re.M | re.S).group(1)
    kustomization = yaml.safe_load((REPO / "k8s" / "base" / "kustomization.yaml").read_text())
    tags = {i["name"]: (i["newName"], str(i["newTag"])) for i in kustomization["images"]}
    assert tags == {
        "dime-edge": ("localhost/dime-edge", version),
        "dime-origin": ("localhost/dime-origin", version),
        "dime-postgres": ("localhost/dime-postgres", "15"),
    }
    build = (IMAGES / "build.sh").read_text()
    assert 'build postgres 15 ' in build and "postgresql-15" in (IMAGES / "postgres.Containerfile").read_text()
