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
# WireGuard is wireguard-go (no kernel module here) driven by wg-quick, from the same kind of
# config a production node's kernel module uses; each node's key is generated in its own state
# directory and only the public key is shared. Every process runs inside its node's namespace.
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
