#!/usr/bin/env bash
# Build the project's images on this machine, with no registry: the CPU training image and the serving
# image, from the repository's Dockerfiles as CI builds them (scripts/images.sh builds and pushes them to
# ACR/ECR; this is its local sibling, used by the container tests, tests/cloud/test_containers.py).
#
#   scripts/images-local.sh [all]    # both images (default); prints training_image_cpu=REF, serving_image=REF
#   scripts/images-local.sh training # the CPU training image only
#   scripts/images-local.sh serving  # the serving image only
#   scripts/images-local.sh base     # only the local base image (podman); prints base_image=REF
#
# Engine: $DETOPS_CONTAINER_ENGINE, `podman` (default) or `docker`.
# - podman (Debian's, as root; no registry reachable): the base is a stand-in for the Dockerfiles' pinned
#   python:3.11.x-slim-bookworm made from Debian's packages (debootstrap bookworm, python3 3.11, /usr/local
#   a venv of it, so `python` and pip sit where the official image has them and pip may install), imported
#   with `podman import` and passed as the PYTHON_IMAGE build argument. Builds and runs use the OCI
#   runtime runc and explicit ulimits (crun cannot set RLIMIT_NOFILE here), the host network for pip, and
#   the host's CA bundle (pip reaches the package index through a local certificate authority).
# - docker: the Dockerfiles' own pinned base (pulled from Docker Hub); no extra flags.
#
# Caching: every image is tagged with a content hash of what goes into it (the Dockerfile and its
# .dockerignore, requirements/*.txt, docker/*.sh, pyproject.toml, README.md and the training, deployment
# and detops packages, and the base image's tag; the base: this script's base recipe). An image whose tag exists is not rebuilt;
# when one is built, older tags of the same image are removed (the layer cache keeps what they share).
# Log lines go to stderr, the name=REF lines to stdout.
set -euo pipefail
shopt -s inherit_errexit  # a failed build inside $(...) ends the script
cd "$(dirname "$0")/.."
what="${1:-all}"
engine="${DETOPS_CONTAINER_ENGINE:-podman}"
case "$engine" in
  podman | docker) ;;
  *) echo "DETOPS_CONTAINER_ENGINE must be podman or docker, got '$engine'" >&2; exit 2 ;;
esac
case "$what" in
  all | training | serving | base) ;;
  *) echo "usage: $0 [all|training|serving|base]" >&2; exit 2 ;;
esac
command -v "$engine" >/dev/null || { echo "$engine not found (bash scripts/setup.sh test installs podman)" >&2; exit 2; }

DEBIAN_SUITE=bookworm  # the Debian release of python:3.11-slim-bookworm
# podman's global flags for build and run (docs/cloud.md, "Containers on this machine")
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=1024:20000 --ulimit nproc=1024:4096)

log() { echo "images-local: $*" >&2; }

image_exists() {
  if [ "$engine" = podman ]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}

# Remove the other tags of repository $1 (older content hashes), keeping tag $2.
drop_old_tags() {
  local repo="$1" keep="$2" ref
  for ref in $("$engine" images --format '{{.Repository}}:{{.Tag}}' "$repo" 2>/dev/null); do
    if [ "$ref" != "$repo:$keep" ] && [ "${ref##*:}" != "<none>" ]; then
      "$engine" rmi "$ref" >/dev/null 2>&1 || true
    fi
  done
}

# The Debian mirror of this machine's apt sources (deb822 or one-line format).
debian_mirror() {
  local uri
  uri="$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

# The base recipe: this function's text is hashed into the base image's tag.
make_base_rootfs() { # root-folder
  local root="$1"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$DEBIAN_SUITE" "$root" "$(debian_mirror)" >&2
  # /usr/local as a venv of Debian's python3: python, python3 and pip in /usr/local/bin, packages in
  # /usr/local/lib/python3.11/site-packages, no EXTERNALLY-MANAGED marker in the way (as the official image)
  chroot "$root" /usr/bin/python3 -m venv /usr/local >&2
  chroot "$root" /usr/local/bin/python -m pip --version >&2
  rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
}

base_image() {
  local tag ref root
  tag="$DEBIAN_SUITE-$(declare -f make_base_rootfs debian_mirror | sha256sum | cut -c1-12)"
  ref="localhost/detops-base:$tag"
  if image_exists "$ref"; then
    log "base $ref cached"
  else
    command -v debootstrap >/dev/null || { echo "debootstrap not found (bash scripts/setup.sh test)" >&2; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "making the base needs root (debootstrap, chroot)" >&2; exit 2; }
    root="$(mktemp -d "${TMPDIR:-/tmp}/detops-base.XXXXXX")"
    log "making $ref from Debian $DEBIAN_SUITE in $root"
    make_base_rootfs "$root"
    tar -C "$root" -c . | podman import \
      --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$ref" >/dev/null
    rm -rf "$root"
    drop_old_tags localhost/detops-base "$tag"
  fi
  echo "$ref"
}

# Content hash of what image $1 (training|serving) is built from, on base $2.
content_hash() {
  local dockerfile="docker/$1.Dockerfile"
  {
    echo "base $2"
    sha256sum "$dockerfile" "$dockerfile.dockerignore" pyproject.toml README.md requirements/*.txt docker/*.sh
    find training deployment detops -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
      | xargs -0 sha256sum
  } | sha256sum | cut -c1-12
}

build_image() { # training|serving base-ref -> prints the image ref
  local name="$1" base="$2" tag repo ref tmp
  local dockerfile="docker/$name.Dockerfile"
  local args=(--file "$dockerfile")
  tag="$(content_hash "$name" "$base")"
  repo="localhost/detops-$name"
  if [ "$name" = training ]; then
    tag="cpu-$tag"
    args+=(--build-arg VARIANT=cpu)
  fi
  ref="$repo:$tag"
  if image_exists "$ref"; then
    log "$ref cached"
    echo "$ref"
    return
  fi
  log "building $ref"
  local start=$SECONDS
  if [ "$engine" = podman ]; then
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/detops-build.XXXXXX")"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$tmp/pip.conf"
    nice -n 5 "${PODMAN[@]}" build "${ULIMITS[@]}" --network host --build-arg "PYTHON_IMAGE=$base" \
      -v /etc/ssl/certs:/etc/ssl/certs:ro -v "$tmp/pip.conf:/etc/pip.conf:ro" \
      --ignorefile "$dockerfile.dockerignore" "${args[@]}" --tag "$ref" . >&2
    rm -rf "$tmp"
  else
    # docker: the Dockerfile's pinned base; BuildKit reads <Dockerfile>.dockerignore itself
    nice -n 5 docker build "${args[@]}" --tag "$ref" . >&2
  fi
  log "built $ref in $((SECONDS - start)) s"
  drop_old_tags "$repo" "$tag"
  echo "$ref"
}

base=""
if [ "$engine" = podman ]; then
  base="$(base_image)"
fi
# (assignments, not echo "$(...)": a failed build must end the script with its error)
if [ "$what" = base ]; then
  echo "base_image=$base"
fi
if [ "$what" = all ] || [ "$what" = training ]; then
  ref="$(build_image training "$base")"
  echo "training_image_cpu=$ref"
fi
if [ "$what" = all ] || [ "$what" = serving ]; then
  ref="$(build_image serving "$base")"
  echo "serving_image=$ref"
fi
