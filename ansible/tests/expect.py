"""Checks one rendered edge.toml against what the inventory says about its host (expect.json)."""

import json
import sys
import tomllib


def main(config_path: str, expect_path: str) -> int:
    with open(config_path, "rb") as f:
        config = tomllib.load(f)
    with open(expect_path, encoding="utf-8") as f:
        expect = json.load(f)
    host = expect["host"]
    errors = []

    def want(what, got, wanted):
        if got != wanted:
            errors.append(f"{what}: {got!r}, want {wanted!r}")

    listen = config.get("listen", {})
    # The admin listener (metrics, purge, config API) answers on the overlay only.
    want("listen.admin", listen.get("admin"), f"{expect['overlay_address']}:{expect['admin_port']}")
    want("listen.http", listen.get("http"), expect["http"])
    want("listen.https", listen.get("https", []), expect["https"])
    if expect["https"] and not config.get("tls", {}).get("certificates"):
        errors.append("https listeners without [[tls.certificates]]")
    pools = config.get("pools", {})
    want("pools", sorted(pools), ["shield"])
    backends = [b if isinstance(b, str) else b["addr"] for b in pools.get("shield", {}).get("backends", [])]
    want("pools.shield.backends", backends, expect["shield_backends"])
    for route in config.get("routes", []):
        headers = route.get("response_headers", {})
        want(f"routes[{route.get('name')}].response_headers X-Dime-Edge", headers.get("X-Dime-Edge"), expect["name"])
        want(f"routes[{route.get('name')}].response_headers X-Dime-Region", headers.get("X-Dime-Region"), expect["region"])
    want("cache.memory", config.get("cache", {}).get("memory"), expect["cache_memory"])

    for error in errors:
        print(f"check-configs: {host}: {config_path}: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
