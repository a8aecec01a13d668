#!/usr/bin/env bash
# Install the Debian packages the local cluster and the image build need, when missing (idempotent).
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables ipset conntrack iproute2 kmod socat debootstrap podman openssl gcc libc6-dev curl wrk
  chromium)  # chromium: the model report test renders report.html in it, headless
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || { echo "installing ${missing[*]} needs root" >&2; exit 1; }
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
# Debian starts nothing here (no systemd), but make sure a packaged containerd is not holding the node's paths.
command -v go >/dev/null || { echo "Go is needed to build the cluster binaries from the Go module proxy" >&2; exit 1; }
