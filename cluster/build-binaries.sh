#!/usr/bin/env bash
# Build the local cluster's binaries from the Go module proxy, pinned by versions.env,
# into a per-user cache keyed by version. Reuses what is already built.
#
#   KUBELOOP_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/kubeloop)
#   KUBELOOP_BIN_DIR a directory of ready binaries to use instead of building (all of
#                    kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
#                    kubectl etcd helm coredns must be there)
#
# Prints the directory that holds the binaries on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${KUBELOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeloop}
k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
all_bins=("${k8s_bins[@]}" etcd helm coredns)

if [[ -n "${KUBELOOP_BIN_DIR:-}" ]]; then
  for b in "${all_bins[@]}"; do
    [[ -x "$KUBELOOP_BIN_DIR/$b" ]] || { echo "KUBELOOP_BIN_DIR=$KUBELOOP_BIN_DIR lacks an executable $b" >&2; exit 1; }
  done
  echo "$KUBELOOP_BIN_DIR"
  exit 0
fi

key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_coredns-${COREDNS_VERSION}"
out="$cache/bin/$key"
complete=1
for b in "${all_bins[@]}"; do [[ -x "$out/$b" ]] || complete=0; done
if [[ $complete == 1 ]]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "go is needed to build the cluster binaries (or set KUBELOOP_BIN_DIR)" >&2; exit 1; }
start=$(date +%s)
work="$cache/build/$key"
mkdir -p "$work" "$out.tmp"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
proxy_mod() { curl -fsS --retry 3 "${GOPROXY_URL:-https://proxy.golang.org}/$1/@v/$2.mod"; }

# --- Kubernetes + etcd: one wrapper module with upstream's go.mod, staging replaces
#     pointed at the published v0.X.Y releases so the build resolves from the proxy alone.
staging="v0.${KUBERNETES_VERSION#v1.}"
mkdir -p "$work/k8s"
if [[ ! -f "$work/k8s/go.mod" ]]; then
  proxy_mod k8s.io/kubernetes "$KUBERNETES_VERSION" \
    | sed -E -e 's#^module k8s.io/kubernetes#module kubeloop.local/k8sbuild#' \
             -e "s#^(\s*)(k8s.io/[a-z0-9-]+) => ./staging/src/k8s.io/[a-z0-9-]+#\1\2 => \2 $staging#" \
    > "$work/k8s/go.mod.tmp"
  printf '\nrequire k8s.io/kubernetes %s\n' "$KUBERNETES_VERSION" >> "$work/k8s/go.mod.tmp"
  mv "$work/k8s/go.mod.tmp" "$work/k8s/go.mod"
fi
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=module-proxy"
done
pkgs=()
for b in "${k8s_bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
echo "building kubernetes $KUBERNETES_VERSION (${k8s_bins[*]}) ..." >&2
(cd "$work/k8s" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "${pkgs[@]}")
# etcd at the exact version kubernetes requires; its main package is the server module root.
(cd "$work/k8s" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>/dev/null \
  || go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)

# --- Helm and CoreDNS: their go.mod files have no local replaces, so `go install` works.
echo "building helm $HELM_VERSION and coredns $COREDNS_VERSION ..." >&2
GOBIN="$out.tmp" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"

# pause.c ships in the kubernetes module zip; keep it for the pause image.
src=$(cd "$work/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
cp "$src/build/pause/linux/pause.c" "$out.tmp/pause.c"

echo "$(( $(date +%s) - start ))" > "$out.tmp/BUILD_SECONDS"  # read by bench/cluster_bench.py
rm -rf "$out" && mv "$out.tmp" "$out"
echo "built cluster binaries in $(cat "$out/BUILD_SECONDS") s" >&2
echo "$out"
