#!/usr/bin/env bash
# One Kubernetes node: containerd, kubelet and kube-proxy, started by localcluster.py as
#   unshare --mount --propagation slave nsenter --net=/run/netns/NETNS node.sh ROOT CGROUP BIN
# so that every mount and network change lives in a mount namespace and a network namespace of
# the node's own: the host's /run, /var/lib, /var/log, kernel settings and iptables are never
# touched. It lives as long as all three do (and ends them when one exits).
set -euo pipefail
root=$1 cgroup=$2 bin=$3

# Every process of the node, even the shims containerd reparents, stays in this cgroup, so the
# cluster can end them all when it stops.
echo $$ >"/sys/fs/cgroup/pids$cgroup/node/cgroup.procs"

# The node's own /run (containerd's shim sockets, pod network namespaces, the iptables lock),
# /var/lib (kubelet's fixed /var/lib/kubelet/device-plugins) and /var/log (/var/log/containers).
mount -t tmpfs -o mode=755 node-run /run
mkdir -p "$root/var-lib" "$root/var-log" /run/netns
mount --bind "$root/var-lib" /var/lib
mount --bind "$root/var-log" /var/log
# kubelet checks these kernel settings; it reads the node's copies, the machine's stay as they are.
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  file="$root/sysctl/${setting%%=*}"
  mkdir -p "$(dirname "$file")"
  echo "${setting#*=}" >"$file"
  mount --bind "$file" "/proc/sys/${setting%%=*}"
done
ip link set lo up
# Forwarding between the pods' bridge and the link to the host, in this network namespace only.
echo 1 >/proc/sys/net/ipv4/ip_forward

# Each dies with this script (whose own parent-death signal is the cluster's): a killed test run
# leaves no node behind; what containerd reparented is ended through the cgroup.
die_with_node=(setpriv --pdeathsig KILL)
"${die_with_node[@]}" containerd --config "$root/containerd.toml" >"$root/containerd.log" 2>&1 &
for _ in $(seq 1 200); do [[ -S "$root/containerd.sock" ]] && break; sleep 0.1; done
"${die_with_node[@]}" "$bin/kubelet" --config="$root/kubelet.yaml" --kubeconfig="$root/kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1 >"$root/kubelet.log" 2>&1 &
"${die_with_node[@]}" "$bin/kube-proxy" --config="$root/kube-proxy.yaml" --v=1 >"$root/kube-proxy.log" 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT TERM INT
wait -n
