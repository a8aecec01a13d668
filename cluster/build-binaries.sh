#!/usr/bin/env bash
# Build the local cluster's binaries from the Go module proxy, pinned by versions.env,
# into a per-user cache keyed by version. Reuses what is already built.
#
#   build-binaries.sh                  the cluster: Kubernetes, etcd, Helm, CoreDNS, metrics-server and
#                                      kube-router; prints the Kubernetes/etcd/Helm/CoreDNS directory on its last line
#   build-binaries.sh metrics-server   prints metrics-server's directory on its last line
#   build-binaries.sh kube-router      prints kube-router's directory on its last line (the NetworkPolicy enforcer)
#   build-binaries.sh prometheus       Prometheus v3 and promtool (not part of the cluster, built only when
#                                      asked); prints their directory on its last line
#
# Each part has its own cache directory keyed by its own versions, so a new metrics-server or
# Prometheus never rebuilds Kubernetes (15 minutes cold on 2 cores).
#
#   KUBELOOP_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/kubeloop)
#   KUBELOOP_BIN_DIR a directory of ready binaries to use instead of building (all of
#                    kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
#                    kubectl etcd helm coredns must be there; metrics-server, kube-router, prometheus and
#                    promtool are taken from it when there, else built into the cache as usual)
#
# Messages go to stderr; stdout carries only directories.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${KUBELOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeloop}
k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
all_bins=("${k8s_bins[@]}" etcd helm coredns)
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

log() { echo "$*" >&2; }
all_executable() {  # DIR BIN...: every BIN is an executable in DIR
  local dir=$1 b; shift
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}
need_go() {
  command -v go >/dev/null || { log "go is needed to build $1 (or set KUBELOOP_BIN_DIR to a directory that has it)"; exit 1; }
}
# One build of a part at a time (`make test` and `localcluster.py up` may both ask): wait for the lock,
# then look again, as the other may have built it meanwhile. The lock is released when the script exits.
lock() {  # OUT
  mkdir -p "$cache/locks"
  exec {lock_fd}>"$cache/locks/$(basename "$1")"
  flock "$lock_fd"
}
# A build goes into OUT.tmp; finish records the seconds it took, then moves it into place
# (a build that fails half-way leaves no directory that looks complete).
finish() {  # OUT START NAME
  echo "$(( $(date +%s) - $2 ))" > "$1.tmp/BUILD_SECONDS"  # read by bench/cluster_bench.py
  rm -rf "$1" && mv "$1.tmp" "$1"
  log "built $3 in $(cat "$1/BUILD_SECONDS") s into $1"
}

# ---------------------------------------------------------------- Kubernetes, etcd, Helm, CoreDNS
kubernetes_dir() {
  if [[ -n "${KUBELOOP_BIN_DIR:-}" ]]; then
    local b
    for b in "${all_bins[@]}"; do
      [[ -x "$KUBELOOP_BIN_DIR/$b" ]] || { log "KUBELOOP_BIN_DIR=$KUBELOOP_BIN_DIR lacks an executable $b"; exit 1; }
    done
    dir=$KUBELOOP_BIN_DIR
    return
  fi
  local key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_coredns-${COREDNS_VERSION}"
  local out="$cache/bin/$key"
  dir=$out
  all_executable "$out" "${all_bins[@]}" && return
  need_go "the cluster binaries"
  lock "$out"
  all_executable "$out" "${all_bins[@]}" && return
  local start work
  start=$(date +%s)
  work="$cache/build/$key"
  rm -rf "$out.tmp" && mkdir -p "$work" "$out.tmp"
  proxy_mod() { curl -fsS --retry 3 "${GOPROXY_URL:-https://proxy.golang.org}/$1/@v/$2.mod"; }

  # --- Kubernetes + etcd: one wrapper module with upstream's go.mod, staging replaces
  #     pointed at the published v0.X.Y releases so the build resolves from the proxy alone.
  local staging="v0.${KUBERNETES_VERSION#v1.}"
  mkdir -p "$work/k8s"
  if [[ ! -f "$work/k8s/go.mod" ]]; then
    proxy_mod k8s.io/kubernetes "$KUBERNETES_VERSION" \
      | sed -E -e 's#^module k8s.io/kubernetes#module kubeloop.local/k8sbuild#' \
               -e "s#^(\s*)(k8s.io/[a-z0-9-]+) => ./staging/src/k8s.io/[a-z0-9-]+#\1\2 => \2 $staging#" \
      > "$work/k8s/go.mod.tmp"
    printf '\nrequire k8s.io/kubernetes %s\n' "$KUBERNETES_VERSION" >> "$work/k8s/go.mod.tmp"
    mv "$work/k8s/go.mod.tmp" "$work/k8s/go.mod"
  fi
  local build_date minor ldflags pkg b pkgs=()
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=module-proxy"
  done
  for b in "${k8s_bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  log "building kubernetes $KUBERNETES_VERSION (${k8s_bins[*]}) ..."
  (cd "$work/k8s" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "${pkgs[@]}")
  # etcd at the exact version kubernetes requires; its main package is the server module root.
  (cd "$work/k8s" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>/dev/null \
    || go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)

  # --- Helm and CoreDNS: their go.mod files have no local replaces, so `go install` works.
  log "building helm $HELM_VERSION and coredns $COREDNS_VERSION ..."
  GOBIN="$out.tmp" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"

  # pause.c ships in the kubernetes module zip; keep it for the pause image.
  local src
  src=$(cd "$work/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  cp "$src/build/pause/linux/pause.c" "$out.tmp/pause.c"
  finish "$out" "$start" "the cluster binaries"
}

# ---------------------------------------------------------------- metrics-server
metrics_server_dir() {
  if [[ -n "${KUBELOOP_BIN_DIR:-}" ]]; then
    if [[ -x "$KUBELOOP_BIN_DIR/metrics-server" ]]; then dir=$KUBELOOP_BIN_DIR; return; fi
    log "KUBELOOP_BIN_DIR=$KUBELOOP_BIN_DIR has no metrics-server: using the cache's (built if missing)"
  fi
  local out="$cache/bin/metrics-server-$METRICS_SERVER_VERSION"
  dir=$out
  all_executable "$out" metrics-server && return
  need_go "metrics-server"
  lock "$out"
  all_executable "$out" metrics-server && return
  local start
  start=$(date +%s)
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  log "building metrics-server $METRICS_SERVER_VERSION ..."
  # its go.mod has no replaces, so `go install` resolves it from the proxy as it is; its version is
  # client-go's (upstream's Makefile sets the same variables)
  local v=k8s.io/client-go/pkg/version
  GOBIN="$out.tmp" go install -trimpath \
    -ldflags "-s -w -X $v.gitVersion=$METRICS_SERVER_VERSION -X $v.gitCommit=module-proxy -X $v.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
  finish "$out" "$start" "metrics-server"
}

# ---------------------------------------------------------------- kube-router (NetworkPolicy enforcer)
kube_router_dir() {
  if [[ -n "${KUBELOOP_BIN_DIR:-}" ]]; then
    if [[ -x "$KUBELOOP_BIN_DIR/kube-router" ]]; then dir=$KUBELOOP_BIN_DIR; return; fi
    log "KUBELOOP_BIN_DIR=$KUBELOOP_BIN_DIR has no kube-router: using the cache's (built if missing)"
  fi
  local out="$cache/bin/kube-router-$KUBE_ROUTER_VERSION"
  dir=$out
  all_executable "$out" kube-router && return
  need_go "kube-router"
  lock "$out"
  all_executable "$out" kube-router && return
  local start
  start=$(date +%s)
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  log "building kube-router $KUBE_ROUTER_VERSION ..."
  # its go.mod has no replaces, so `go install` resolves it from the proxy as it is; the version
  # variables are those upstream's Makefile sets
  local v=github.com/cloudnativelabs/kube-router/v2/pkg/version
  GOBIN="$out.tmp" go install -trimpath \
    -ldflags "-s -w -X $v.Version=$KUBE_ROUTER_VERSION -X $v.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
  finish "$out" "$start" "kube-router"
}

# ---------------------------------------------------------------- Prometheus v3
prometheus_dir() {
  if [[ -n "${KUBELOOP_BIN_DIR:-}" ]]; then
    if all_executable "$KUBELOOP_BIN_DIR" prometheus promtool; then dir=$KUBELOOP_BIN_DIR; return; fi
    log "KUBELOOP_BIN_DIR=$KUBELOOP_BIN_DIR has no prometheus and promtool: using the cache's (built if missing)"
  fi
  local out="$cache/bin/prometheus-$PROMETHEUS_VERSION"
  dir=$out
  all_executable "$out" prometheus promtool && return
  need_go "prometheus"
  lock "$out"
  all_executable "$out" prometheus promtool && return
  local start mod release
  start=$(date +%s)
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  mod=github.com/prometheus/prometheus
  # Prometheus v3.X.Y is published to Go as v0.3XX.Y; the release it stands for is in the module's VERSION file.
  release=$(cat "$(go mod download -json "$mod@$PROMETHEUS_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')/VERSION")
  log "building prometheus $release (module $mod $PROMETHEUS_VERSION) and promtool ..."
  local v=github.com/prometheus/common/version
  # Service discovery: kubernetes only (besides static, file and http, always there). remove_all_sd drops
  # the cloud SDKs (AWS, Azure, GCE, ...), most of what there is to compile. Without upstream's
  # builtinassets tag the web UI is not embedded (npm builds its assets; the module has none): the HTTP
  # API, scraping, rules and remote write all work.
  GOBIN="$out.tmp" go install -trimpath -tags netgo,remove_all_sd,enable_kubernetes_sd \
    -ldflags "-s -w -X $v.Version=$release -X $v.Revision=module-proxy-$PROMETHEUS_VERSION -X $v.Branch=release-${release%.*} -X $v.BuildUser=kubeloop -X $v.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)" \
    "$mod/cmd/prometheus@$PROMETHEUS_VERSION" "$mod/cmd/promtool@$PROMETHEUS_VERSION"
  finish "$out" "$start" "prometheus $release"
}

dir=
case "${1:-cluster}" in
  cluster)  # the Kubernetes directory is the one printed (what localcluster.py and the tests read)
    kubernetes_dir
    k8s_dir=$dir
    metrics_server_dir
    kube_router_dir
    dir=$k8s_dir ;;
  metrics-server) metrics_server_dir ;;
  kube-router) kube_router_dir ;;
  prometheus) prometheus_dir ;;
  *) log "usage: $0 [cluster|metrics-server|kube-router|prometheus]"; exit 2 ;;
esac
echo "$dir"
