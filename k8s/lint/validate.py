#!/usr/bin/env python3
"""Validates rendered manifests against the Kubernetes OpenAPI schemas, every error reported.

kubernetes-validate's own CLI stops at the first error of an object and only warns about a
kind it has no schema for; this wrapper uses its strict schemas (unknown fields are errors)
with jsonschema's iter_errors, so every error of every object is printed, and an unknown kind
or apiVersion fails. Usage: validate.py --version 1.37 FILE.yaml...
"""

import argparse
import re
import sys

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils

# Custom resources have no schema in kubernetes-validate; Dime's manifests use none.


def schema_dir(version):
    """The strict schema directory kubernetes-validate ships for `version` (MAJOR.MINOR)."""
    versions = [v for v in utils.all_versions() if utils.major_minor(v) == version]
    if not versions:
        raise SystemExit(
            f"validate.py: kubernetes-validate {utils.__version__} has no schemas for {version} "
            f"(it has {', '.join(utils.major_minor(v) for v in utils.all_versions())})"
        )
    return f"v{versions[-1]}-local-strict"


def validator_for(obj, directory, cache):
    """A jsonschema validator for the object's kind and apiVersion, or None when unknown."""
    # rbac.authorization.k8s.io/v1 -> rbac-v1; v1 -> v1 (as kubernetes-validate names files).
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    name = f"kubernetes-json-schema/{directory}/{obj['kind'].lower()}-{api}.json"
    if name not in cache:
        try:
            schema = utils.schema_contents(name, directory)
        except FileNotFoundError:
            cache[name] = None
            return None
        definitions = utils.schema_contents(
            f"kubernetes-json-schema/{directory}/_definitions.json", directory
        )
        registry = referencing.Registry()
        registry = referencing.Resource.from_contents(schema) @ registry
        registry = referencing.Resource.from_contents(definitions) @ registry
        cache[name] = jsonschema.Draft202012Validator(schema, registry=registry)
    return cache[name]


def label(obj):
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    where = f"{namespace}/" if namespace else ""
    return f"{obj.get('kind', '?')} {where}{meta.get('name', '?')}"


def errors_of(obj, directory, cache):
    """Every schema error of one object, as printable lines."""
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str):
            return [f"{label(obj)}: missing {field}"]
    validator = validator_for(obj, directory, cache)
    if validator is None:
        return [f"{label(obj)}: unknown kind {obj['kind']} in {obj['apiVersion']} (no schema)"]
    out = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in error.absolute_path) or "(object)"
        out.append(f"{label(obj)}: {path}: {error.message}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="Kubernetes MAJOR.MINOR, e.g. 1.37")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    directory = schema_dir(args.version)
    cache = {}
    objects = failed = 0
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            documents = [d for d in yaml.safe_load_all(f) if d is not None]
        for obj in documents:
            objects += 1
            errors = errors_of(obj, directory, cache)
            if errors:
                failed += 1
            for line in errors:
                print(f"{path}: {line}")
    print(
        f"validate.py: {objects - failed} of {objects} object(s) valid against Kubernetes "
        f"{args.version} (strict), {failed} invalid"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
