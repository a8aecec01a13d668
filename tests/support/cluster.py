"""Host facts the local cluster can change (read before up and after down) and the run's cluster state."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LOCALCLUSTER = [sys.executable, str(REPO / "cluster" / "localcluster.py")]
DEFAULT_KUBECONFIG = REPO / ".kube" / "config"
STATE_DIR = Path(os.environ.get("KUBELOOP_CLUSTER_STATE", "/var/lib/kubeloop-cluster"))
RUN_DIR = Path(os.environ.get("KUBELOOP_CLUSTER_RUN", "/run/kubeloop-cluster"))
CLUSTER_PROGRAMS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "metrics-server",
    "kube-router",
    "prometheus",  # optional: up --with-prometheus, or tests/e2e/test_dashboard.py
    "containerd",
    "containerd-shim",
    "coredns",
    "pause",
)


def _cmd(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True).stdout


def cluster_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            cgroup = (entry / "cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if os.path.basename(argv0) in CLUSTER_PROGRAMS or "kubepods" in cgroup:
            found.append(f"{entry.name} {argv0}")
    return sorted(found)


def facts() -> dict[str, Any]:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    iptables = _cmd("iptables-save") + _cmd("ip6tables-save")
    return {
        "processes": cluster_processes(),
        "mounts": sorted(
            m
            for m in mounts
            if m.startswith((str(STATE_DIR), str(RUN_DIR), "/run/netns/cni-", "/var/run/netns/cni-"))
        ),
        "links": sorted(
            line.split(":")[1].strip().split("@")[0]
            for line in _cmd("ip", "-o", "link").splitlines()
            if "kubeloop0" in line or "veth" in line
        ),
        # kube-router's (the NetworkPolicy enforcer); no ipset command, no sets anyone could have made
        "ipsets": sorted(
            name
            for name in (_cmd("ipset", "list", "-n") if shutil.which("ipset") else "").split()
            if name.removeprefix("inet6:").startswith(("KUBE-", "TMP-"))
        ),
        "iptables_chains": sorted(
            {
                word
                for line in iptables.splitlines()
                for word in line.split()
                if word.startswith(("KUBE-", "CNI-"))
            }
        ),
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")),
        "state_dirs": sorted(str(p) for p in (STATE_DIR, RUN_DIR) if p.exists()),
        # where the kubelet, containerd and libcni write whatever they are told
        "fixed_paths": sorted(
            str(p)
            for d in (
                "/var/lib/kubelet",
                "/var/lib/cni",
                "/run/containerd",
                "/run/netns",
                "/var/log/containers",
            )
            if Path(d).exists()
            for p in [Path(d), *Path(d).rglob("*")]
        ),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
    }


@functools.cache  # every kubectl call of the tests asks; build-binaries.sh need answer only once
def kubectl_binary() -> str:
    """The pinned kubectl built with the cluster (never another on PATH: its version could differ)."""
    bin_dir = (
        subprocess.run(
            [str(REPO / "cluster" / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return str(Path(bin_dir) / "kubectl")


def binary(name: str) -> str:
    return str(Path(kubectl_binary()).parent / name)


class ClusterState:
    """What this test run knows about the cluster it uses (shared by conftest and the teardown test)."""

    def __init__(self) -> None:
        self.kubeconfig = Path(os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG)
        self.started_by_tests = False
        self.before: dict[str, Any] | None = None  # host facts before this run started the cluster


STATE = ClusterState()
