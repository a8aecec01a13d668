#!/usr/bin/env python3
"""A real single-node Kubernetes built from upstream parts, for development, the demo and the tests.

    localcluster.py up [--control-plane-only] [--with-prometheus]   start (idempotent)
    localcluster.py prometheus [--stop]          start (or stop) Prometheus beside a running cluster
    localcluster.py down                         stop and remove everything it made
    localcluster.py status                       what is running, and the kubeconfig to use

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as host processes; with the node,
containerd + runc (Debian's), the kubelet, kube-proxy (iptables mode), CoreDNS (in a pod), metrics-server
(a host process behind the API server's aggregation layer: `kubectl top`, HorizontalPodAutoscalers) and
kube-router's firewall (a host process enforcing NetworkPolicies with iptables and ipsets) join them.
Prometheus is optional (`up --with-prometheus`, KUBELOOP_WITH_PROMETHEUS=1, or `prometheus` later): a host
process on 10.244.0.1:9090 (the bridge: the host and the pods reach it) that finds the inference servers and
the operator by kubernetes_sd_configs and evaluates the chart's alerting rules
(helm/kubeloop/files/rules.yaml).
Everything the cluster makes lives under STATE_DIR and RUN_DIR, on the bridge `kubeloop0`
(10.244.0.1/24, the only address the cluster listens on besides loopback), and in iptables chains named
KUBE-* / CNI-* and ipsets named KUBE-* (kube-router's); `down` removes all of it. Needs root. Standard
library only, so it runs before any venv.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STATE_DIR = Path(os.environ.get("KUBELOOP_CLUSTER_STATE", "/var/lib/kubeloop-cluster"))
RUN_DIR = Path(os.environ.get("KUBELOOP_CLUSTER_RUN", "/run/kubeloop-cluster"))
KUBECONFIG = Path(os.environ.get("KUBELOOP_KUBECONFIG", REPO / ".kube" / "config"))

NODE_NAME = "kubeloop-node"
BRIDGE = "kubeloop0"
NODE_IP = "10.244.0.1"  # the bridge's address: pods reach the API server here, nothing listens outside
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
APISERVER_PORT = 6443
METRICS_SERVER_PORT = 4443  # on NODE_IP; the kubelet has 10250, upstream's in-pod default
ETCD_CLIENT = "http://127.0.0.1:23790"
ETCD_PEER = "http://127.0.0.1:23800"

PKI = STATE_DIR / "pki"
LOGS = STATE_DIR / "logs"
PIDS = RUN_DIR / "pids"
CONTAINERD_SOCK = RUN_DIR / "containerd" / "containerd.sock"
SAVED_SYSCTLS = STATE_DIR / "saved-sysctls.json"
SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}

FRONT_PROXY_CLIENT = "front-proxy-client"
METRICS_SERVER_USER = "kubeloop:metrics-server"
KUBE_ROUTER_USER = "kubeloop:kube-router"
PROMETHEUS_USER = "kubeloop:prometheus"
# On the bridge, not loopback: the operator in its pod reads Prometheus there (canary analysis, Monitors).
PROMETHEUS_ADDRESS = f"{NODE_IP}:9090"
# 4 scrapes in 20s: the rules' 5m windows and the dashboard's rates have samples soon after a pod starts
PROMETHEUS_SCRAPE_INTERVAL = "5s"
PROMETHEUS_DIR = STATE_DIR / "prometheus"

CONTROL_PLANE = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
NODE = ["containerd", "kubelet", "kube-proxy", "metrics-server", "kube-router"]


def log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


def run(*cmd: str | Path, check: bool = True, input: str | None = None, quiet: bool = False) -> str:
    res = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise SystemExit(
            f"command failed ({res.returncode}): {' '.join(map(str, cmd))}\n{res.stderr.strip()}"
        )
    if res.returncode != 0 and not quiet:
        log(f"ignored failure of {' '.join(map(str, cmd))}: {res.stderr.strip()[:300]}")
    return res.stdout


def versions() -> dict[str, str]:
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def binaries(part: str = "cluster") -> Path:
    """The directory of a part's binaries, built (or reused from the cache) by build-binaries.sh.

    "cluster": Kubernetes, etcd, Helm and CoreDNS (metrics-server and kube-router are built with them,
    each in its own directory); "metrics-server", "kube-router": that directory."""
    res = subprocess.run([str(HERE / "build-binaries.sh"), part], stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise SystemExit(f"building the {part} binaries failed (see the messages above)")
    return Path(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- processes


def pid_of(name: str) -> int | None:
    try:
        pid = int((PIDS / name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    # a recycled PID belongs to another program: only trust it if it still runs our binary
    return pid if name.encode() in cmdline.split(b"\0")[0] else None


def start(name: str, cmd: list[str | Path], env: dict[str, str] | None = None) -> None:
    if pid_of(name):
        return
    LOGS.mkdir(parents=True, exist_ok=True)
    PIDS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    (PIDS / name).write_text(str(proc.pid))
    log(f"started {name} (pid {proc.pid}, log {LOGS / (name + '.log')})")


def stop(name: str, timeout: float = 20) -> None:
    pid = pid_of(name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            if _is_zombie(pid):
                break
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            os.kill(pid, signal.SIGKILL)
        log(f"stopped {name} (pid {pid})")
    (PIDS / name).unlink(missing_ok=True)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def processes_using(path_fragment: str) -> list[int]:
    """PIDs whose command line mentions path_fragment (the containerd shims of our containerd)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if path_fragment.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
    return [p for p in found if p != os.getpid()]


def wait_for(what: str, check, timeout: float, interval: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}; logs are in {LOGS}")


# ---------------------------------------------------------------- PKI and kubeconfigs


def openssl(*args: str | Path) -> None:
    run("openssl", *args)


def make_cert(name: str, subject: str, usage: str, sans: list[str] | None = None, ca: str = "ca") -> None:
    """An EC key and a certificate signed by the CA `ca` (client or server usage)."""
    key, crt = PKI / f"{name}.key", PKI / f"{name}.crt"
    if crt.exists():
        return
    ext = [
        f"extendedKeyUsage={usage}",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "basicConstraints=critical,CA:FALSE",
    ]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    with tempfile.NamedTemporaryFile("w", suffix=".cnf") as extfile:
        extfile.write("\n".join(ext) + "\n")
        extfile.flush()
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        openssl("req", "-new", "-key", key, "-subj", subject, "-out", PKI / f"{name}.csr")
        openssl(
            "x509",
            "-req",
            "-in",
            PKI / f"{name}.csr",
            "-CA",
            PKI / f"{ca}.crt",
            "-CAkey",
            PKI / f"{ca}.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-sha256",
            "-extfile",
            extfile.name,
            "-out",
            crt,
        )
    (PKI / f"{name}.csr").unlink()


def make_ca(name: str, common_name: str) -> None:
    if (PKI / f"{name}.crt").exists():
        return
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", PKI / f"{name}.key")
    openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        PKI / f"{name}.key",
        "-subj",
        f"/CN={common_name}",
        "-days",
        "3650",
        "-sha256",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out",
        PKI / f"{name}.crt",
    )


def ensure_pki() -> None:
    PKI.mkdir(parents=True, exist_ok=True)
    os.chmod(PKI, 0o700)
    make_ca("ca", "kubeloop-local-ca")
    if not (PKI / "sa.key").exists():
        openssl("genrsa", "-out", PKI / "sa.key", "2048")
        openssl("rsa", "-in", PKI / "sa.key", "-pubout", "-out", PKI / "sa.pub")
    apiserver_sans = [
        f"IP:{NODE_IP}",
        f"IP:{KUBERNETES_SERVICE_IP}",
        "IP:127.0.0.1",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    make_cert("apiserver", "/CN=kube-apiserver", "serverAuth", apiserver_sans)
    make_cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth")
    make_cert("admin", "/O=system:masters/CN=kubeloop-admin", "clientAuth")
    make_cert("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    make_cert("scheduler", "/CN=system:kube-scheduler", "clientAuth")
    make_cert("kube-proxy", "/CN=system:kube-proxy", "clientAuth")
    make_cert("kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth")
    make_cert(
        "kubelet-serving",
        f"/O=system:nodes/CN=system:node:{NODE_NAME}",
        "serverAuth",
        [f"IP:{NODE_IP}", f"DNS:{NODE_NAME}", "IP:127.0.0.1"],
    )
    # The aggregation layer. The API server proxies metrics.k8s.io to metrics-server with this client cert
    # and the caller's identity in X-Remote-* headers; metrics-server trusts those headers only from a
    # cert of FRONT_PROXY_CLIENT signed by its own CA (kubeadm's layout: a cert the cluster CA signs,
    # a CSR approved by the controller-manager among them, cannot assert identities).
    make_ca("front-proxy-ca", "kubeloop-front-proxy-ca")
    make_cert("front-proxy-client", f"/CN={FRONT_PROXY_CLIENT}", "clientAuth", ca="front-proxy-ca")
    # metrics-server's identity towards the API server and the kubelet (RBAC binds this user), and the
    # serving cert the aggregator verifies by the Service's name (the APIService's caBundle is our CA).
    make_cert("metrics-server", f"/CN={METRICS_SERVER_USER}", "clientAuth")
    make_cert(
        "metrics-server-serving",
        "/CN=metrics-server",
        "serverAuth",
        ["DNS:metrics-server.kube-system.svc", f"IP:{NODE_IP}"],
    )
    # kube-router's identity (RBAC binds this user: it reads pods, namespaces and NetworkPolicies)
    make_cert("kube-router", f"/CN={KUBE_ROUTER_USER}", "clientAuth")
    for key in PKI.glob("*.key"):
        os.chmod(key, 0o600)


def write_kubeconfig(path: Path, cert: str, server: str = f"https://{NODE_IP}:{APISERVER_PORT}") -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kubeloop",
        "clusters": [
            {
                "name": "kubeloop",
                "cluster": {"server": server, "certificate-authority-data": b64(PKI / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": cert,
                "user": {
                    "client-certificate-data": b64(PKI / f"{cert}.crt"),
                    "client-key-data": b64(PKI / f"{cert}.key"),
                },
            }
        ],
        "contexts": [{"name": "kubeloop", "context": {"cluster": "kubeloop", "user": cert}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=1))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


# ---------------------------------------------------------------- host networking


def set_sysctls() -> None:
    if not SAVED_SYSCTLS.exists():
        saved = {k: run("sysctl", "-n", k, check=False, quiet=True).strip() for k in SYSCTLS}
        SAVED_SYSCTLS.write_text(json.dumps(saved))
    for key, value in SYSCTLS.items():
        run("sysctl", "-q", "-w", f"{key}={value}", check=False)


def restore_sysctls() -> None:
    if SAVED_SYSCTLS.exists():
        for key, value in json.loads(SAVED_SYSCTLS.read_text()).items():
            if value:
                run("sysctl", "-q", "-w", f"{key}={value}", check=False, quiet=True)


def ensure_bridge() -> None:
    """The bridge exists before the API server so that it can bind to the node address."""
    if run("ip", "link", "show", BRIDGE, check=False, quiet=True) == "":
        run("ip", "link", "add", BRIDGE, "type", "bridge")
    if NODE_IP not in run("ip", "-4", "addr", "show", BRIDGE):
        run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def remove_iptables_chains() -> None:
    """Drop every KUBE-* and CNI-* chain and every rule that mentions one, in iptables and ip6tables."""
    for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
        if not shutil.which(save):
            continue
        dump = run(save, check=False, quiet=True)
        kept, changed = [], False
        for line in dump.splitlines():
            ours = ("KUBE-" in line or "CNI-" in line) and (line.startswith((":", "-A")))
            changed |= ours
            if not ours:
                kept.append(line)
        if changed:
            run(restore, input="\n".join(kept) + "\n", check=False)


# ---------------------------------------------------------------- components


def start_control_plane(bins: Path) -> None:
    start(
        "etcd",
        [
            bins / "etcd",
            "--name",
            "kubeloop",
            "--data-dir",
            STATE_DIR / "etcd",
            "--listen-client-urls",
            ETCD_CLIENT,
            "--advertise-client-urls",
            ETCD_CLIENT,
            "--listen-peer-urls",
            ETCD_PEER,
            "--initial-advertise-peer-urls",
            ETCD_PEER,
            "--initial-cluster",
            f"kubeloop={ETCD_PEER}",
            # a throwaway dev cluster: durability is not worth the fsync latency (envtest does the same)
            "--unsafe-no-fsync",
        ],
    )
    wait_for("etcd", lambda: urllib.request.urlopen(f"{ETCD_CLIENT}/health", timeout=2).status == 200, 60)
    start(
        "kube-apiserver",
        [
            bins / "kube-apiserver",
            "--etcd-servers",
            ETCD_CLIENT,
            "--bind-address",
            NODE_IP,
            "--advertise-address",
            NODE_IP,
            "--secure-port",
            str(APISERVER_PORT),
            "--tls-cert-file",
            PKI / "apiserver.crt",
            "--tls-private-key-file",
            PKI / "apiserver.key",
            "--client-ca-file",
            PKI / "ca.crt",
            "--kubelet-client-certificate",
            PKI / "apiserver-kubelet-client.crt",
            "--kubelet-client-key",
            PKI / "apiserver-kubelet-client.key",
            # the node's name is not in any DNS the host uses: reach the kubelet by its address
            "--kubelet-preferred-address-types",
            "InternalIP,Hostname",
            "--kubelet-certificate-authority",
            PKI / "ca.crt",
            "--service-cluster-ip-range",
            SERVICE_CIDR,
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            PKI / "sa.pub",
            "--service-account-signing-key-file",
            PKI / "sa.key",
            "--authorization-mode",
            "Node,RBAC",
            "--enable-admission-plugins",
            "NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
            "--cert-dir",
            STATE_DIR / "apiserver-certs",
            # the aggregation layer, for metrics.k8s.io (see ensure_pki)
            "--requestheader-client-ca-file",
            PKI / "front-proxy-ca.crt",
            "--requestheader-allowed-names",
            FRONT_PROXY_CLIENT,
            "--requestheader-username-headers",
            "X-Remote-User",
            "--requestheader-uid-headers",
            "X-Remote-Uid",
            "--requestheader-group-headers",
            "X-Remote-Group",
            "--requestheader-extra-headers-prefix",
            "X-Remote-Extra-",
            "--proxy-client-cert-file",
            PKI / "front-proxy-client.crt",
            "--proxy-client-key-file",
            PKI / "front-proxy-client.key",
            # reach an aggregated API at its endpoint's address, not its Service's cluster IP: metrics-server
            # is a host process, and without a node there is no kube-proxy rule for a cluster IP at all
            "--enable-aggregator-routing=true",
        ],
    )
    write_kubeconfig(KUBECONFIG, "admin")
    for component in (
        "controller-manager",
        "scheduler",
        "kubelet-client",
        "kube-proxy",
        "metrics-server",
        "kube-router",
    ):
        write_kubeconfig(STATE_DIR / f"{component}.kubeconfig", component)
    wait_for("the API server to be ready", lambda: kubectl("get", "--raw", "/readyz") == "ok", 120)
    start(
        "kube-controller-manager",
        [
            bins / "kube-controller-manager",
            "--kubeconfig",
            STATE_DIR / "controller-manager.kubeconfig",
            "--authentication-kubeconfig",
            STATE_DIR / "controller-manager.kubeconfig",
            "--authorization-kubeconfig",
            STATE_DIR / "controller-manager.kubeconfig",
            "--bind-address",
            "127.0.0.1",
            "--leader-elect=false",
            "--service-account-private-key-file",
            PKI / "sa.key",
            "--root-ca-file",
            PKI / "ca.crt",
            "--cluster-signing-cert-file",
            PKI / "ca.crt",
            "--cluster-signing-key-file",
            PKI / "ca.key",
            "--use-service-account-credentials=true",
            "--service-cluster-ip-range",
            SERVICE_CIDR,
        ],
    )
    start(
        "kube-scheduler",
        [
            bins / "kube-scheduler",
            "--kubeconfig",
            STATE_DIR / "scheduler.kubeconfig",
            "--authentication-kubeconfig",
            STATE_DIR / "scheduler.kubeconfig",
            "--authorization-kubeconfig",
            STATE_DIR / "scheduler.kubeconfig",
            "--bind-address",
            "127.0.0.1",
            "--leader-elect=false",
        ],
    )
    # the default ServiceAccount in "default" is made by the controller-manager: a sign it works
    wait_for(
        "the controller-manager",
        lambda: "default" in kubectl("get", "serviceaccount", "default", "-o", "name"),
        120,
    )


def containerd_config() -> str:
    cni_dir = STATE_DIR / "cni"
    return f"""version = 2
root = "{STATE_DIR / "containerd"}"
state = "{RUN_DIR / "containerd"}"
oom_score = 0
[grpc]
  address = "{CONTAINERD_SOCK}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: never ask runc for a lower oom_score_adj than containerd's own
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state beside ours, not in /run/containerd/runc
        Root = "{RUN_DIR / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir / "net.d"}"
"""


def cni_config() -> dict:  # type: ignore[type-arg]
    return {
        "cniVersion": "1.0.0",
        "name": "kubeloop",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(STATE_DIR / "cni" / "ipam"),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def kubelet_config() -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(PKI / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(PKI / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(PKI / "kubelet-serving.key"),
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
        "cgroupDriver": "cgroupfs",
        # these machines run cgroup v1: supported (deprecated) in 1.34, refused by default from 1.35
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": "",
        "podLogsDir": str(STATE_DIR / "pod-logs"),
        "serializeImagePulls": False,
        # a dev node on a shared disk: do not evict or garbage-collect images because the disk is full-ish
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "kubeReserved": {},
        "systemReserved": {},
        "maxPods": 110,
    }


def kube_proxy_config() -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(STATE_DIR / "kube-proxy.kubeconfig")},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # root here may not raise nf_conntrack_max: leave the kernel's conntrack settings alone
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


PAUSE_IMAGE = "registry.k8s.io/pause:" + versions()["PAUSE_VERSION"]


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def coredns_image() -> str:
    return "kubeloop.local/coredns:" + versions()["COREDNS_VERSION"]


def start_node(bins: Path) -> None:
    (STATE_DIR / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "cni" / "net.d" / "10-kubeloop.conflist").write_text(json.dumps(cni_config(), indent=1))
    (STATE_DIR / "containerd.toml").write_text(containerd_config())
    start("containerd", ["containerd", "--config", STATE_DIR / "containerd.toml"])
    wait_for("containerd", lambda: ctr("version") != "", 60)
    import_image(bins, "pause", PAUSE_IMAGE)
    import_image(bins, "coredns", coredns_image())
    (STATE_DIR / "kubelet.json").write_text(json.dumps(kubelet_config(), indent=1))
    start(
        "kubelet",
        [
            bins / "kubelet",
            "--config",
            STATE_DIR / "kubelet.json",
            "--kubeconfig",
            STATE_DIR / "kubelet-client.kubeconfig",
            "--hostname-override",
            NODE_NAME,
            "--node-ip",
            NODE_IP,
            "--root-dir",
            STATE_DIR / "kubelet",
            "--cert-dir",
            STATE_DIR / "kubelet" / "pki",
            # kubelet's own oom_score_adj: lowering it needs CAP_SYS_RESOURCE, which root lacks here
            "--oom-score-adj",
            "0",
        ],
    )
    # Written only when it changed: kube-proxy exits when its config file is written (seen: a second `up`
    # stopped it, and Services made after that got no rules, so their clients timed out).
    write_if_changed(STATE_DIR / "kube-proxy.json", json.dumps(kube_proxy_config(), indent=1))
    start("kube-proxy", [bins / "kube-proxy", "--config", STATE_DIR / "kube-proxy.json"])
    wait_for(
        f"node {NODE_NAME} to be Ready",
        lambda: (
            kubectl(
                "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
            )
            == "True"
        ),
        180,
    )
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=coredns_manifests())
    wait_for(
        "CoreDNS to be available",
        lambda: (
            kubectl(
                "-n",
                "kube-system",
                "get",
                "deployment",
                "coredns",
                "-o",
                "jsonpath={.status.availableReplicas}",
            )
            == "1"
        ),
        180,
    )
    # Available is not enough: the name must resolve through the Service address, which needs kube-proxy's
    # rules for it too. Pods started right after `up` would otherwise race them.
    wait_for(
        "cluster DNS to answer through its Service",
        lambda: resolves("kubernetes.default.svc.cluster.local", DNS_SERVICE_IP) == KUBERNETES_SERVICE_IP,
        120,
    )
    start_metrics_server(binaries("metrics-server"))
    start_kube_router(binaries("kube-router"))


def start_metrics_server(bins: Path) -> None:
    """metrics-server on the host, registered as the metrics.k8s.io API; needs the node (it scrapes it)."""
    apiserver = pid_of("kube-apiserver")
    if (
        apiserver
        and b"--enable-aggregator-routing=true" not in Path(f"/proc/{apiserver}/cmdline").read_bytes()
    ):
        # `up` leaves running components alone: one started by an older localcluster.py cannot proxy
        # metrics.k8s.io, and the APIService would never become available
        raise SystemExit("the running kube-apiserver has no aggregation layer flags: run `down`, then `up`")
    cmd: list[str | Path] = [
        bins / "metrics-server",
        "--kubeconfig",
        STATE_DIR / "metrics-server.kubeconfig",
        "--authentication-kubeconfig",
        STATE_DIR / "metrics-server.kubeconfig",
        "--authorization-kubeconfig",
        STATE_DIR / "metrics-server.kubeconfig",
        "--bind-address",
        NODE_IP,
        "--secure-port",
        str(METRICS_SERVER_PORT),
        "--tls-cert-file",
        PKI / "metrics-server-serving.crt",
        "--tls-private-key-file",
        PKI / "metrics-server-serving.key",
        # the kubelet's serving cert is signed by the cluster CA for NODE_IP (the node's InternalIP):
        # verify it rather than --kubelet-insecure-tls
        "--kubelet-certificate-authority",
        PKI / "ca.crt",
        "--kubelet-preferred-address-types",
        "InternalIP",
        # upstream's manifest: 15s (the default, 60s, makes an HPA react a minute late)
        "--metric-resolution",
        "15s",
    ]
    # Its RBAC first: started before it, metrics-server panics on reading the request-header CA.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=metrics_server_manifests())
    start("metrics-server", cmd)
    restarts = [0]

    def exited() -> bool:
        # Not pid_of: between fork and exec the child's cmdline is still this script's.
        try:
            pid = int((PIDS / "metrics-server").read_text())
        except (FileNotFoundError, ValueError):
            return True
        return not Path(f"/proc/{pid}").exists() or _is_zombie(pid)

    def available() -> bool:
        if exited():
            if restarts[0] >= 3:
                tail = (LOGS / "metrics-server.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"metrics-server exited 3 times; the end of its log:\n{tail}")
            restarts[0] += 1  # e.g. its RBAC not yet seen by the API server's authorizer
            start("metrics-server", cmd)
            return False
        return (
            kubectl(
                "get",
                "apiservice",
                "v1beta1.metrics.k8s.io",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Available')].status}",
            )
            == "True"
        )

    try:
        wait_for("the metrics.k8s.io API to be available", available, 120)
    except SystemExit as error:
        said = kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "yaml")
        tail = (LOGS / "metrics-server.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{error}\nthe APIService: {said}\nmetrics-server's log ends:\n{tail}") from None


def start_kube_router(bins: Path) -> None:
    """kube-router's firewall alone on the host: NetworkPolicies become iptables chains (KUBE-ROUTER-*,
    KUBE-NWPLCY-*, KUBE-POD-FW-*) and ipsets (KUBE-SRC-*, KUBE-DST-*) in the host's network namespace,
    where the bridge's traffic passes (bridge-nf-call-iptables) after kube-proxy's DNAT to a pod. Routing
    and service proxying stay with the bridge plugin and kube-proxy. It needs the node object."""
    if not shutil.which("ipset"):
        raise SystemExit("kube-router needs the ipset command: run cluster/install-host-deps.sh")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=kube_router_rbac())
    cmd: list[str | Path] = [
        bins / "kube-router",
        "--kubeconfig",
        STATE_DIR / "kube-router.kubeconfig",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--hostname-override",
        NODE_NAME,
        "--service-cluster-ip-range",
        SERVICE_CIDR,
        # its health endpoint would listen on every interface: the cluster listens only on the bridge
        "--health-port=0",
    ]
    start("kube-router", cmd)

    def enforcing() -> bool:
        pid = int((PIDS / "kube-router").read_text())
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            raise SystemExit("kube-router exited")  # not an Exception: wait_for lets it through
        # its FORWARD hook is in place once its first full sync of the policies is done
        return "-j KUBE-ROUTER-FORWARD" in run("iptables", "-S", "FORWARD", check=False, quiet=True)

    try:
        wait_for("kube-router's firewall chains", enforcing, 60)
    except SystemExit as error:
        tail = (LOGS / "kube-router.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{error}\nkube-router's log ends:\n{tail}") from None


def kube_router_rbac() -> str:
    """What kube-router reads. The firewall uses pods, namespaces, NetworkPolicies and its node; its
    informer factory also syncs services, endpoints and EndpointSlices before it starts, so it reads
    those too (read only: it changes no object)."""
    labels = {"app.kubernetes.io/name": "kube-router", "app.kubernetes.io/managed-by": "localcluster"}
    read = ["get", "list", "watch"]
    objects = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": KUBE_ROUTER_USER, "labels": labels},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                    "verbs": read,
                },
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": KUBE_ROUTER_USER, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": KUBE_ROUTER_USER,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER}],
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def start_prometheus(bins: Path) -> None:
    """Prometheus on the host: pods found through the API server (its own user, allowed to list and watch
    pods; the cluster CA verifies the API server), scraped at their pod IPs on the bridge."""
    if not pid_of("kube-apiserver"):
        raise SystemExit("Prometheus needs the cluster: run `up` first")
    make_cert("prometheus", f"/CN={PROMETHEUS_USER}", "clientAuth")
    os.chmod(PKI / "prometheus.key", 0o600)
    write_kubeconfig(STATE_DIR / "prometheus.kubeconfig", "prometheus")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=prometheus_rbac())
    PROMETHEUS_DIR.mkdir(parents=True, exist_ok=True)
    (PROMETHEUS_DIR / "prometheus.yml").write_text(
        json.dumps(prometheus_config(STATE_DIR / "prometheus.kubeconfig"), indent=1)
    )
    start(
        "prometheus",
        [
            bins / "prometheus",
            "--config.file",
            PROMETHEUS_DIR / "prometheus.yml",
            "--storage.tsdb.path",
            PROMETHEUS_DIR / "data",
            "--web.listen-address",
            PROMETHEUS_ADDRESS,
        ],
    )
    wait_for("Prometheus to be ready", lambda: http_ok(f"http://{PROMETHEUS_ADDRESS}/-/ready"), 60)
    log(f"Prometheus: http://{PROMETHEUS_ADDRESS} (config {PROMETHEUS_DIR / 'prometheus.yml'})")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as res:
            return bool(res.status == 200)
    except OSError:
        return False


def prometheus_config(kubeconfig: Path) -> dict:  # type: ignore[type-arg]
    """The scrape configuration (JSON is YAML): the pods annotated prometheus.io/scrape (the inference
    servers), and the operator's metrics port. The labels are those the chart's PodMonitors give and its
    rules and dashboard group by (namespace, pod, modeldeployment, track); the operator's series keep
    their own namespace (honor_labels): the Monitor's or ModelDeployment's, not the operator pod's."""
    sd = [{"role": "pod", "kubeconfig_file": str(kubeconfig)}]
    running = [
        # a pod's init containers (the model fetch) and pods that stopped are no targets
        {"source_labels": ["__meta_kubernetes_pod_container_init"], "regex": "true", "action": "drop"},
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
    ]

    def copy(meta: str, label: str) -> dict[str, object]:
        return {"source_labels": [f"__meta_kubernetes_{meta}"], "target_label": label}

    return {
        "global": {
            "scrape_interval": PROMETHEUS_SCRAPE_INTERVAL,
            "evaluation_interval": PROMETHEUS_SCRAPE_INTERVAL,
        },
        "rule_files": [str(REPO / "helm" / "kubeloop" / "files" / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "kubeloop-servers",
                "kubernetes_sd_configs": sd,
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                        "regex": "true",
                        "action": "keep",
                    },
                    *running,
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                        "regex": "(.+)",
                        "target_label": "__metrics_path__",
                    },
                    {
                        "source_labels": [
                            "__meta_kubernetes_pod_ip",
                            "__meta_kubernetes_pod_annotation_prometheus_io_port",
                        ],
                        "regex": "(.+);([0-9]+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    copy("namespace", "namespace"),
                    copy("pod_name", "pod"),
                    copy("pod_label_kubeloop_io_modeldeployment", "modeldeployment"),
                    copy("pod_label_kubeloop_io_track", "track"),
                ],
            },
            {
                "job_name": "kubeloop-operator",
                "honor_labels": True,
                "kubernetes_sd_configs": sd,
                "relabel_configs": [
                    {
                        "source_labels": [
                            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
                            "__meta_kubernetes_pod_label_app_kubernetes_io_component",
                            "__meta_kubernetes_pod_container_port_name",
                        ],
                        "regex": "kubeloop;operator;metrics",
                        "action": "keep",
                    },
                    *running,
                    copy("pod_name", "pod"),
                ],
            },
        ],
    }


def prometheus_rbac() -> str:
    """Prometheus's user may list and watch pods (kubernetes_sd_configs role pod), nothing else."""
    labels = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/managed-by": "localcluster"}
    objects = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": PROMETHEUS_USER, "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": PROMETHEUS_USER, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": PROMETHEUS_USER,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": PROMETHEUS_USER}],
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def resolves(name: str, server: str) -> str | None:
    """The first A record for `name` from the DNS server at `server`:53 (one UDP query), or None."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\x00\x01\x00\x01"
    query = b"\x4b\x4c\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question  # id, RD, one question
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query, (server, 53))
        answer = sock.recv(512)
    if answer[:2] != query[:2] or int.from_bytes(answer[6:8], "big") == 0:
        return None
    rdata = answer[-4:]  # the only answer of a single-A-record reply is last
    return ".".join(str(b) for b in rdata)


def ctr(*args: str) -> str:
    return run("ctr", "--address", CONTAINERD_SOCK, "--namespace", "k8s.io", *args, check=False, quiet=True)


def import_image(bins: Path, kind: str, ref: str) -> None:
    """Build (once, cached) and import the pause or CoreDNS image, made from binaries built here."""
    if ref in ctr("images", "ls", "-q").split():
        return
    tar = subprocess.run(
        [sys.executable, str(HERE / "images.py"), kind, str(bins), ref],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.strip()
    import_image_tar(Path(tar))


def import_image_tar(tar: Path) -> None:
    run("ctr", "--address", CONTAINERD_SOCK, "--namespace", "k8s.io", "images", "import", tar)


def coredns_manifests() -> str:
    corefile = (
        ".:1053 {\n    errors\n    health :8080\n    ready :8181\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n"
        "       fallthrough in-addr.arpa ip6.arpa\n    }\n    cache 30\n    loop\n    reload\n}\n"
    )
    labels = {"k8s-app": "kube-dns"}
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "coredns",
                                "image": coredns_image(),
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"containerPort": 1053, "protocol": "UDP", "name": "dns"},
                                    {"containerPort": 1053, "protocol": "TCP", "name": "dns-tcp"},
                                ],
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/coredns", "readOnly": True}
                                ],
                                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 1053, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 1053, "protocol": "TCP"},
                ],
            },
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def metrics_server_manifests() -> str:
    """RBAC as upstream's manifests (bound to the host process's user, not a ServiceAccount), a Service
    without selector whose Endpoints are metrics-server's host address, and the APIService."""
    user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": METRICS_SERVER_USER}
    labels = {"k8s-app": "metrics-server"}

    def binding(kind: str, name: str, role_kind: str, role: str, namespace: str | None = None) -> dict:  # type: ignore[type-arg]
        meta = {"name": name, "labels": labels} | ({"namespace": namespace} if namespace else {})
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [user],
        }

    objects = [
        {
            # who may read metrics: aggregated into the view/edit/admin roles
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "system:aggregated-metrics-reader",
                "labels": labels
                | {f"rbac.authorization.k8s.io/aggregate-to-{r}": "true" for r in ("view", "edit", "admin")},
            },
            "rules": [
                {
                    "apiGroups": ["metrics.k8s.io"],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            # what metrics-server reads: the kubelet's /metrics/resource, and pods and nodes
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:metrics-server", "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            ],
        },
        binding("ClusterRoleBinding", "system:metrics-server", "ClusterRole", "system:metrics-server"),
        # delegated authentication and authorization of the requests the aggregator forwards
        binding(
            "ClusterRoleBinding",
            "metrics-server:system:auth-delegator",
            "ClusterRole",
            "system:auth-delegator",
        ),
        binding(
            "RoleBinding",
            "metrics-server-auth-reader",
            "Role",
            "extension-apiserver-authentication-reader",
            namespace="kube-system",
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "metrics-server", "namespace": "kube-system", "labels": labels},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": METRICS_SERVER_PORT}]},
        },
        {
            # v1 Endpoints (the controller-manager mirrors them into an EndpointSlice): the Service has no
            # selector, its one endpoint is the host process
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "metrics-server", "namespace": "kube-system", "labels": labels},
            "subsets": [
                {"addresses": [{"ip": NODE_IP}], "ports": [{"name": "https", "port": METRICS_SERVER_PORT}]}
            ],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io", "labels": labels},
            "spec": {
                "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                # verified, unlike upstream's insecureSkipTLSVerify: the serving cert is our CA's
                "caBundle": base64.b64encode((PKI / "ca.crt").read_bytes()).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def kubectl(*args: str, input: str | None = None) -> str:
    bins = Path((RUN_DIR / "bin-dir").read_text())
    return run(
        bins / "kubectl", "--kubeconfig", KUBECONFIG, *args, input=input, check=False, quiet=True
    ).strip()


# ---------------------------------------------------------------- teardown


def mounts_under(*roots: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if (
            any(point == str(r) or point.startswith(str(r) + "/") for r in roots)
            or point.startswith("/run/netns/cni-")
            or point.startswith("/var/run/netns/cni-")
        ):
            points.append(point)
    return points


def remove_cgroups() -> None:
    """kubepods cgroups the kubelet made, leaves first (a cgroup dir can only go when it is empty)."""
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / "kubepods"
        if top.is_dir():
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)


# Paths the kubelet, containerd's shims and libcni use whatever they are told: emptied at `down`, then
# removed if nothing else is left in them.
FIXED_PATHS = {
    Path("/var/lib/kubelet/device-plugins"): ["kubelet.sock"],
    Path("/var/lib/cni/results"): ["kubeloop-*", "cni-loopback-*"],
    Path("/run/containerd/s"): ["*"],
    Path("/var/log/containers"): [],
    Path("/run/netns"): [],
}


def remove_fixed_paths() -> None:
    for directory, patterns in FIXED_PATHS.items():
        for pattern in patterns:
            for leftover in directory.glob(pattern):
                leftover.unlink(missing_ok=True)
        for empty in (directory, directory.parent):
            with contextlib.suppress(OSError):
                empty.rmdir()  # only succeeds when empty: what others keep there stays


def remove_ipsets() -> None:
    """kube-router's ipsets (KUBE-SRC-*, KUBE-DST-*, their inet6: twins and the TMP-<base32> sets of a
    restore it did not finish); run after the iptables rules that reference them are gone."""
    if not shutil.which("ipset"):
        return
    for name in run("ipset", "list", "-n", check=False, quiet=True).split():
        if is_kube_router_ipset(name):
            run("ipset", "destroy", name, check=False)


def is_kube_router_ipset(name: str) -> bool:
    name = name.removeprefix("inet6:")
    if name.startswith("TMP-"):
        rest = name[4:]
        return len(rest) == 16 and all(c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in rest)
    return name.startswith("KUBE-")


def down() -> None:
    # kube-router first: stopped later, it would put back the chains and ipsets removed below
    for name in ("prometheus", "kube-router", "metrics-server", "kube-proxy", "kubelet"):
        stop(name)
    # containers and their shims: kill every process our containerd started, then containerd
    shims = processes_using(str(CONTAINERD_SOCK.parent))
    stop("containerd")
    for pid in shims + processes_using(str(CONTAINERD_SOCK.parent)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for name in reversed(CONTROL_PLANE):
        stop(name)
    # container processes re-parented after their shim died: they live in our kubepods cgroups
    for tasks in (
        Path("/sys/fs/cgroup/pids/kubepods").rglob("cgroup.procs")
        if Path("/sys/fs/cgroup/pids/kubepods").exists()
        else []
    ):
        for task in tasks.read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(task), signal.SIGKILL)
    time.sleep(0.5)
    for point in sorted(mounts_under(STATE_DIR, RUN_DIR), key=len, reverse=True):
        run("umount", "-l", point, check=False, quiet=True)
    for netns in list(Path("/run/netns").glob("cni-*")) if Path("/run/netns").exists() else []:
        run("ip", "netns", "delete", netns.name, check=False, quiet=True)
    run("ip", "link", "delete", BRIDGE, check=False, quiet=True)
    remove_iptables_chains()
    remove_ipsets()
    remove_cgroups()
    restore_sysctls()
    for link in Path("/var/log/containers").glob("*.log") if Path("/var/log/containers").exists() else []:
        if str(STATE_DIR) in os.readlink(link):
            link.unlink()
    remove_fixed_paths()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    KUBECONFIG.unlink(missing_ok=True)
    log("down: every process stopped, mounts, bridge, iptables chains, ipsets, cgroups and state removed")


# ---------------------------------------------------------------- entry points


def up(control_plane_only: bool, with_prometheus: bool = False) -> None:
    if os.geteuid() != 0:
        raise SystemExit("the local cluster needs root (it runs containerd, the kubelet and iptables)")
    t0 = time.monotonic()
    bins = binaries()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    # the node-local artifact store (file:// store URI): written by pods running as uid 65532
    (STATE_DIR / "store").mkdir(exist_ok=True)
    os.chown(STATE_DIR / "store", 65532, 65532)
    (RUN_DIR / "bin-dir").write_text(str(bins))
    set_sysctls()
    ensure_bridge()
    ensure_pki()
    start_control_plane(bins)
    if not control_plane_only:
        start_node(bins)
    if with_prometheus:
        start_prometheus(binaries("prometheus"))
    mode = "control plane only" if control_plane_only else "control plane and node"
    log(f"up ({mode}) in {time.monotonic() - t0:.1f}s; KUBECONFIG={KUBECONFIG}")


def status() -> int:
    running = {name: pid_of(name) for name in CONTROL_PLANE + NODE}
    for name, pid in running.items():
        print(f"{name:24} {f'running (pid {pid})' if pid else 'stopped'}")
    prometheus = pid_of("prometheus")
    said = f"running (pid {prometheus}), http://{PROMETHEUS_ADDRESS}" if prometheus else "stopped (optional)"
    print(f"{'prometheus':24} {said}")
    print(f"kubeconfig               {KUBECONFIG if KUBECONFIG.exists() else '(none)'}")
    if running["kube-apiserver"]:
        print(kubectl("get", "nodes", "-o", "wide"))
    return 0 if all(running[n] for n in CONTROL_PLANE) else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start the cluster (idempotent)")
    up_parser.add_argument("--control-plane-only", action="store_true", help="API server without a node")
    up_parser.add_argument(
        "--with-prometheus",
        action="store_true",
        default=os.environ.get("KUBELOOP_WITH_PROMETHEUS", "") not in ("", "0"),
        help=f"also Prometheus on {PROMETHEUS_ADDRESS} (default from KUBELOOP_WITH_PROMETHEUS)",
    )
    sub.add_parser("prometheus", help="start Prometheus beside the running cluster").add_argument(
        "--stop", action="store_true", help="stop it instead (its data goes with `down`)"
    )
    sub.add_parser("down", help="stop the cluster and remove everything it made")
    sub.add_parser("status", help="show what is running")
    sub.add_parser("import", help="import image tarballs into the node's containerd").add_argument(
        "tarballs", nargs="+", type=Path
    )
    args = parser.parse_args()
    if args.command == "up":
        up(args.control_plane_only, args.with_prometheus)
    elif args.command == "prometheus":
        if args.stop:
            stop("prometheus")
        else:
            start_prometheus(binaries("prometheus"))
    elif args.command == "down":
        down()
    elif args.command == "import":
        for tar in args.tarballs:
            import_image_tar(tar)
    else:
        return status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
