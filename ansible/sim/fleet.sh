#!/usr/bin/env bash
# The edge fleet on one machine: network namespaces stand for the nodes, each with its own
# addresses, joined by an underlay that lets WireGuard's UDP through and nothing else between
# the origin site and the edges (docs/fleet.md#the-simulated-fleet).
#
#   dfl-origin   198.18.0.1    overlay 10.8.0.1 (the hub): streamers, packager, web app, and
#                              the shield dime-edge on 10.8.0.1:30080 (the cluster's NodePort)
#   dfl-edge-a   198.18.0.11   overlay 10.8.0.11: dime-edge, region a, public on :80
#   dfl-edge-b   198.18.0.12   overlay 10.8.0.12: dime-edge, region b, public on :80
#   dfl-view-a   198.18.1.10   viewers of region a (198.18.1.0/24)
#   dfl-view-b   198.18.2.10   viewers of region b (198.18.2.0/24)
#   dfl-wan                    the underlay: one bridge; 198.18.0.0/15 is the benchmarking range
#                              (RFC 2544), never routed beyond this machine
#
# The gateway and the edges are Debian 12 hosts with systemd and sshd (podman containers in
# their nodes' namespaces, ansible/sim/hosts.sh), deployed by a real run of ansible/edge.yml
# from the origin site's namespace: WireGuard (wg-quick with wireguard-go, no kernel module
# here), nftables, and dime-edge as a systemd service. The origin site's own processes run in
# its namespace: streamers, packager, web app with the fleet file, and the shield.
#   bash ansible/sim/fleet.sh up | down | status
# State, logs and keys: target/fleet/. `down` removes every namespace and process `up` made.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source ansible/sim/lib.sh

case ${1:-} in
up) fleet_up ;;
down) fleet_down ;;
status) fleet_status ;;
*)
	echo "usage: ansible/sim/fleet.sh up|down|status" >&2
	exit 2
	;;
esac
