#!/usr/bin/env bash
# Build the project's images (operator, trainer, server) from the Dockerfile without a registry:
# a Debian bookworm base made with debootstrap, `podman build` on it, and (with --import) the images
# imported into the local node's containerd. Everything is cached by the hash of its inputs, so a
# second run with unchanged sources does nothing. Prints a JSON map target -> image reference last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${KUBELOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeloop}
mkdir -p "$cache/images"
# one build at a time: two podman builds of the same tags race each other
exec 9>"$cache/images/.lock"
flock 9
# podman needs rlimits within the hard limits here (no CAP_SYS_RESOURCE)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

# 1. base image: debootstrap of bookworm with its python3 (cached by this recipe)
base_ref=kubeloop.local/debian-python:bookworm
base_recipe="bookworm minbase python3 python3-venv ca-certificates"
base_key=$(echo "$base_recipe" | sha256sum | cut -c1-12)
base_tar="$cache/images/base-$base_key.tar"
if [[ ! -f $base_tar ]]; then
  start=$(date +%s)
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" >&2
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
  rm -rf "$root"
  echo "base image rootfs made in $(( $(date +%s) - start )) s" >&2
fi
if ! podman image exists "$base_ref" || [[ $(podman image inspect -f '{{index .Labels "kubeloop.base-key"}}' "$base_ref") != "$base_key" ]]; then
  podman import --change "LABEL kubeloop.base-key=$base_key" "$base_tar" "$base_ref" >&2
fi

# 2. the project's images, keyed by everything that goes into them
version=$(sed -nE 's/^version = "(.*)"/\1/p' "$repo/pyproject.toml")
inputs_key=$( (cd "$repo" && cat Dockerfile pyproject.toml constraints.txt README.md docker/requirements.py && git ls-files -co --exclude-standard operator \
  | grep -v __pycache__ | sort | xargs cat; echo "$base_key") | sha256sum | cut -c1-12)
tag="$version-$inputs_key"
archive="$cache/images/kubeloop-$tag.tar"
targets=(operator trainer server)
if [[ ! -f $archive ]]; then
  start=$(date +%s)
  ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  ca_args=()
  [[ -f $ca ]] && ca_args=(--volume "$ca:/etc/kubeloop-build-ca.crt:ro" --build-arg PIP_CERT=/etc/kubeloop-build-ca.crt)
  refs=()
  for t in "${targets[@]}"; do
    podman build "${limits[@]}" --network host --layers --target "$t" --build-arg BASE_IMAGE="$base_ref" \
      ${PIP_INDEX_URL:+--build-arg PIP_INDEX_URL="$PIP_INDEX_URL"} "${ca_args[@]}" \
      -t "kubeloop.local/$t:$tag" "$repo" >&2
    refs+=("kubeloop.local/$t:$tag")
  done
  podman save --format docker-archive -m -o "$archive.tmp" "${refs[@]}" >&2
  mv "$archive.tmp" "$archive"
  # keep one archive: the images of older sources are of no use and are large
  find "$cache/images" -name 'kubeloop-*.tar' ! -path "$archive" -delete
  # best effort: the images of older sources, then untagged layers (an image a container still uses stays)
  podman images --format '{{.Repository}}:{{.Tag}}' | grep -E '^kubeloop.local/(operator|trainer|server):' \
    | grep -v ":$tag\$" | xargs -r podman rmi -f >/dev/null 2>&1 || true
  podman image prune -f >/dev/null 2>&1 || true
  echo "images built in $(( $(date +%s) - start )) s" >&2
fi

if [[ ${1:-} == --import ]]; then
  sock=${KUBELOOP_CLUSTER_RUN:-/run/kubeloop-cluster}/containerd/containerd.sock
  have=$(ctr --address "$sock" -n k8s.io images ls -q)
  if ! grep -qx "kubeloop.local/server:$tag" <<<"$have"; then
    start=$(date +%s)
    ctr --address "$sock" -n k8s.io images import "$archive" >&2
    echo "images imported in $(( $(date +%s) - start )) s" >&2
  fi
fi
printf '{"operator": "kubeloop.local/operator:%s", "trainer": "kubeloop.local/trainer:%s", "server": "kubeloop.local/server:%s"}\n' "$tag" "$tag" "$tag"
