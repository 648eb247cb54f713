"""Checks the rendered overlay and firewall of every host against the inventory.

render.yml wrote RENDERED/HOST/etc/wireguard/wg0.conf (every host) and
RENDERED/HOST/etc/nftables.conf (every edge), with stand-in public keys derived from the host
names. Hub and spoke: the gateway peers with every edge (its /32), an edge with the gateway only,
keepalive on the edge's side; no private key in any file; `wg-quick strip` accepts each file;
`nft -c -f` accepts each ruleset (when this user may ask the kernel, else said and skipped).
Usage: check-network.py INVENTORY RENDERED
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile


def stand_in_key(host: str) -> str:
    """The public key render.yml stands in for HOST's."""
    return base64.b64encode(hashlib.sha256(host.encode()).hexdigest()[:32].encode()).decode()


def members(inventory: dict, group: str) -> list[str]:
    g = inventory.get(group, {})
    found = list(g.get("hosts", []))
    for child in g.get("children", []):
        found += members(inventory, child)
    return sorted(set(found))


def parse_wg(path: str) -> tuple[dict, list[dict]]:
    """[Interface] and the [Peer] sections of a wg-quick file, keys as written."""
    interface, peers, current = {}, [], None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line == "[Interface]":
                current = interface
            elif line == "[Peer]":
                current = {}
                peers.append(current)
            else:
                key, _, value = line.partition("=")
                current[key.strip()] = value.strip()
    return interface, peers


def main(inventory_dir: str, rendered: str) -> int:
    for tool in ("wg-quick", "nft"):
        if shutil.which(tool) is None:
            print(f"check-network: {tool} not found: apt-get install wireguard-tools nftables (make deps)", file=sys.stderr)
            return 1
    inventory = json.loads(
        subprocess.run(["ansible-inventory", "-i", inventory_dir, "--list"], check=True, capture_output=True, text=True).stdout
    )
    hostvars = inventory["_meta"]["hostvars"]
    edges, gateways = members(inventory, "edges"), members(inventory, "origin_gateway")
    errors = []

    def endpoint(host):
        return f"{hostvars[host].get('ansible_host', host)}:{hostvars[host].get('overlay_port', 51820)}"

    for host in edges + gateways:
        path = os.path.join(rendered, host, "etc/wireguard/wg0.conf")
        if not os.path.exists(path):
            errors.append(f"{host}: {path} was not rendered")
            continue
        text = open(path, encoding="utf-8").read()
        if "PrivateKey" in text:
            errors.append(f"{host}: {path} holds a PrivateKey: the key must stay in the key file on the host")
        interface, peers = parse_wg(path)
        if interface.get("Address") != f"{hostvars[host]['overlay_address']}/24":
            errors.append(f"{host}: Address {interface.get('Address')!r}")
        if "private-key" not in interface.get("PostUp", ""):
            errors.append(f"{host}: no PostUp setting the private key from its file")
        if host in gateways:
            want = {stand_in_key(e): (f"{hostvars[e]['overlay_address']}/32", endpoint(e), None) for e in edges}
        else:
            want = {
                stand_in_key(g): (
                    ", ".join([f"{hostvars[g]['overlay_address']}/32"] + hostvars[g].get("overlay_routes", [])),
                    endpoint(g),
                    "25",
                )
                for g in gateways
            }
        got = {p.get("PublicKey"): (p.get("AllowedIPs"), p.get("Endpoint"), p.get("PersistentKeepalive")) for p in peers}
        if got != want:
            errors.append(f"{host}: peers {got}, want {want}")
        with tempfile.TemporaryDirectory() as tmp:
            # wg-quick takes the interface name from the file name.
            copy = os.path.join(tmp, "wg0.conf")
            with open(copy, "w", encoding="utf-8") as f:
                f.write(text)
            strip = subprocess.run(["wg-quick", "strip", copy], capture_output=True, text=True)
            if strip.returncode != 0:
                errors.append(f"{host}: wg-quick strip: {strip.stderr.strip()}")
            elif "Address" in strip.stdout or "PostUp" in strip.stdout:
                errors.append(f"{host}: wg-quick strip left wg-quick settings in: {strip.stdout}")

    can_check = subprocess.run(["nft", "-c", "-f", "/dev/null"], capture_output=True).returncode == 0
    if not can_check:
        print("check-network: nft -c cannot ask the kernel here (not root?): rulesets not checked by nft", file=sys.stderr)
    for host in edges:
        path = os.path.join(rendered, host, "etc/nftables.conf")
        if not os.path.exists(path):
            errors.append(f"{host}: {path} was not rendered")
            continue
        text = open(path, encoding="utf-8").read()
        for needle in ("policy drop;", 'iifname "wg0" tcp dport { 9090 } accept', "tcp dport { 80, 443 } accept", "udp dport 51820 accept"):
            if needle not in text:
                errors.append(f"{host}: {path} lacks {needle!r}")
        if can_check:
            nft = subprocess.run(["nft", "-c", "-f", path], capture_output=True, text=True)
            if nft.returncode != 0:
                errors.append(f"{host}: nft -c -f {path}: {nft.stderr.strip()}")
            else:
                print(f"check-network: {host}: nft -c -f {path}: ok")

    for error in errors:
        print(f"check-network: {error}", file=sys.stderr)
    print(f"check-network: {len(edges)} edge(s), {len(gateways)} gateway(s), {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
