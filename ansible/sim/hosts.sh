# The simulated fleet's hosts for a real Ansible run, sourced by ansible/sim/lib.sh: each
# overlay node (the origin gateway, the edges) gets a Debian 12 host with systemd as PID 1 and
# sshd, a podman container sharing the node's network namespace, so the playbook sees what a
# production node offers: its own filesystem, systemd units, apt's database, the node's
# addresses. The controller runs ansible-playbook from the origin site's namespace and reaches
# each host's sshd over the underlay, as an operator's bastion would.
# shellcheck shell=bash

readonly host_image=localhost/dime-fleet-host:bookworm
readonly ansible_venv=${DIME_ANSIBLE_VENV:-.dev/ansible-venv}

hosts_pm() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }

# The hosts' image: the Dime base (debootstrap, k8s/images/base.sh) with systemd, sshd, python3
# and the packages the playbook installs (the namespaces have no route to a Debian mirror, so
# they are in the image; the play's apt tasks find them present).
build_host_image() {
	podman_tool=fleet
	source k8s/images/podman.sh
	podman_setup
	bash k8s/images/base.sh
	if ! hosts_pm image exists "${host_image}"; then
		fleet_say "building ${host_image} (systemd, sshd, python3, WireGuard tools)"
		hosts_pm build --network host -f ansible/sim/host.Containerfile -t "${host_image}" ansible/sim \
			>"${fleet_dir}/host-image.log" 2>&1 || {
			tail -n 30 "${fleet_dir}/host-image.log" >&2
			fleet_die "building ${host_image} failed (the last lines above)"
		}
	fi
}

# The controller's key, and one host per overlay node.
start_hosts() {
	mkdir -p "${fleet_dir}/ansible"
	chmod 700 "${fleet_dir}/ansible"
	ssh-keygen -q -t ed25519 -N '' -C dime-fleet-controller -f "${fleet_dir}/ansible/id_ed25519"
	local node
	for node in origin "${edges[@]}"; do
		hosts_pm run -d --name "dfl-${node}-host" --hostname "${node}" --systemd=always --privileged \
			--network "ns:/run/netns/$(ns "${node}")" \
			-v "${PWD}/${fleet_dir}/ansible/id_ed25519.pub:/root/.ssh/authorized_keys:ro" \
			"${host_image}" >/dev/null
	done
	local deadline=$((SECONDS + 60))
	for node in origin "${edges[@]}"; do
		until hosts_pm exec "dfl-${node}-host" systemctl is-system-running --quiet 2>/dev/null ||
			[[ $(hosts_pm exec "dfl-${node}-host" systemctl is-system-running 2>/dev/null) == degraded ]]; do
			((SECONDS < deadline)) || fleet_die "the host of ${node} did not boot within 60 s"
			sleep 1
		done
	done
}

stop_hosts() {
	command -v podman >/dev/null 2>&1 || return 0
	local node
	for node in origin "${edges[@]}"; do
		hosts_pm rm --force --time 5 "dfl-${node}-host" >/dev/null 2>&1 || true
	done
}

# The inventory of the simulated fleet, in the example inventory's shape (ansible/inventory/).
write_inventory() {
	cat <<EOF
# The simulated fleet (ansible/sim): written by ansible/sim/hosts.sh.
all:
  vars:
    ansible_user: root
    ansible_python_interpreter: /usr/bin/python3
    ansible_ssh_private_key_file: $(realpath "${fleet_dir}/ansible/id_ed25519")
    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
    overlay_network: 10.8.0.0/24
    overlay_interface: wg0
    # No kernel module on the build machines: wg-quick runs wireguard-go.
    overlay_userspace_implementation: wireguard-go
    dime_edge_binary: $(realpath "${bin_dir}/dime-edge")
    dime_edge_cache_memory: 128MiB
    dime_edge_threads: 1
    dime_edge_grace_period: 2s
    dime_edge_target_duration: 1s
    dime_edge_shield_port: ${shield_port}
    dime_edge_admin_port: ${edge_admin_port}
    firewall_ssh_sources: [${underlay[origin]}/32]
  children:
    origin_gateway:
      hosts:
        origin:
          ansible_host: ${underlay[origin]}
          overlay_address: ${overlay[origin]}
    edges:
      children:
        region_a:
          vars:
            edge_region: a
          hosts:
            edge-a:
              ansible_host: ${underlay[edge-a]}
              overlay_address: ${overlay[edge-a]}
              dime_edge_public_addresses: [${underlay[edge-a]}]
        region_b:
          vars:
            edge_region: b
          hosts:
            edge-b:
              ansible_host: ${underlay[edge-b]}
              overlay_address: ${overlay[edge-b]}
              dime_edge_public_addresses: [${underlay[edge-b]}]
EOF
}

# The controller's Ansible, pinned in ansible/requirements.txt: the virtualenv ansible/lint.sh
# uses, made when it is missing or stale.
ensure_ansible_venv() {
	bash .ci/venv.sh ansible/requirements.txt "${ansible_venv}" || fleet_die "the Ansible virtualenv could not be made (above)"
}

# One run of ansible/edge.yml from the origin site's namespace, with any extra arguments
# (-e ...); its output in target/fleet/ansible/run-N.log, its recap on stdout.
run_playbook() {
	local run=$1 log=${fleet_dir}/ansible/run-$1.log
	shift
	ensure_ansible_venv
	write_inventory >"${fleet_dir}/ansible/inventory.yml"
	fleet_say "ansible-playbook edge.yml, run ${run} (from dfl-origin, over the underlay)"
	if ! on origin env ANSIBLE_FORCE_COLOR=0 ANSIBLE_HOST_KEY_CHECKING=False \
		"${ansible_venv}/bin/ansible-playbook" -i "${fleet_dir}/ansible/inventory.yml" ansible/edge.yml "$@" \
		>"${log}" 2>&1; then
		tail -n 40 "${log}" >&2
		fleet_die "ansible-playbook run ${run} failed (the last lines above; whole log: ${log})"
	fi
	sed -n '/^PLAY RECAP/,$p' "${log}"
}
