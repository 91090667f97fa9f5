#!/usr/bin/env bash
# Build and push the training images (GPU, CPU) and the serving image; print their digest references
# (`<repository>@sha256:...`, never a tag) as `name=value` lines for $GITHUB_OUTPUT or Azure Pipelines.
#
#   scripts/images.sh [--login azureml|sagemaker] TRAINING_REPOSITORY SERVING_REPOSITORY [TAG]
#
# --login azureml: `az acr login` to the repositories' ACR (after an OIDC `az login`);
# --login sagemaker: `aws ecr get-login-password | docker login` (after the OIDC role login).
# The repositories are stack outputs (DETOPS_TRAINING_REPOSITORY, DETOPS_SERVING_REPOSITORY: ACR
# `<acr>.azurecr.io/detops-training` or ECR `<account>.dkr.ecr.<region>.amazonaws.com/detops-training`);
# the caller has logged docker in to that registry. TAG defaults to the commit.
#
# Tags are immutable (ECR: imageTagMutability IMMUTABLE, infra/components/aws.py) and name the commit the
# images are built from, so an image whose tag is already in its repository is not built or pushed again:
# its digest is read from the registry (`docker buildx imagetools inspect`) and reported. A re-run of the
# images job on the same commit (a re-run of a failed workflow, train and release on one commit) then
# succeeds with the images that commit already has. Building from a working tree with uncommitted
# changes? Give a TAG of your own.
set -euo pipefail
login=""
if [ "${1:-}" = "--login" ]; then
  login="$2"
  shift 2
fi
if [ "$#" -lt 2 ]; then
  echo "usage: $0 TRAINING_REPOSITORY SERVING_REPOSITORY [TAG]" >&2
  exit 2
fi
training_repo="$1"
serving_repo="$2"
tag="${3:-$(git rev-parse --short=12 HEAD)}"
registry="${training_repo%%/*}"
case "${login}" in
  "") ;;
  azureml) az acr login --name "${registry%%.*}" >&2 ;;
  sagemaker) aws ecr get-login-password | docker login --username AWS --password-stdin "${registry}" >&2 ;;
  *) echo "--login azureml|sagemaker, got '${login}'" >&2; exit 2 ;;
esac

# pushed_digest REF: the digest of REF (repository:tag) in its registry, or nothing when the tag is not there.
pushed_digest() {
  docker buildx imagetools inspect "$1" --format '{{json .Manifest}}' 2>/dev/null \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])' 2>/dev/null || true
}

build() { # output-name dockerfile repository tag [build args...]
  local name="$1" file="$2" repo="$3" image_tag="$4"
  shift 4
  local pushed
  pushed="$(pushed_digest "${repo}:${image_tag}")"
  case "${pushed}" in
    sha256:*)
      echo "${repo}:${image_tag} is already pushed (${pushed}): not built again (immutable tag of this commit)" >&2
      echo "${name}=${repo}@${pushed}"
      return 0 ;;
  esac
  local meta
  meta="$(mktemp)"
  docker buildx build --file "docker/${file}" --tag "${repo}:${image_tag}" --push --metadata-file "${meta}" "$@" . >&2
  local digest
  digest="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["containerimage.digest"])' "${meta}")"
  rm -f "${meta}"
  case "${digest}" in
    sha256:*) echo "${name}=${repo}@${digest}" ;;
    *) echo "no digest for ${repo}:${image_tag} (got '${digest}')" >&2; exit 1 ;;
  esac
}

build training_image training.Dockerfile "${training_repo}" "${tag}-gpu" --build-arg VARIANT=gpu
build training_image_cpu training.Dockerfile "${training_repo}" "${tag}-cpu" --build-arg VARIANT=cpu
build serving_image serving.Dockerfile "${serving_repo}" "${tag}"
