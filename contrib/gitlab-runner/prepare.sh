#!/bin/sh
# GitLab Runner custom executor, prepare_exec: the job's `image:` is an
# imgcache name (image: capy-ubuntu-25.04-gcc15). imgcache makes it ready
# in the daemon, verified, held for the job; the job container starts from
# the content-pinned ref it returns, so no registry is ever asked.
set -eu
. "$(dirname "$0")/base.sh"
name=${CUSTOM_ENV_CI_JOB_IMAGE:-}
if [ -z "$name" ]; then
  echo "imgcache: the job names no image: set image: to an imgcache name (imgcache ls lists them)" >&2
  exit "$BUILD_FAILURE_EXIT_CODE"
fi
if ! ref=$(imgcache get --hold "$IMGCACHE_JOB_HOLD" "$name"); then
  echo "imgcache: could not make $name ready (see above)" >&2
  exit "$SYSTEM_FAILURE_EXIT_CODE"
fi
echo "imgcache: $name is ready as $ref"
docker rm -f "$CONTAINER" >/dev/null 2>&1 || true # a retried job
if ! docker run -d --name "$CONTAINER" --label com.gitlab.ci.job="${CUSTOM_ENV_CI_JOB_ID}" \
  --entrypoint sh "$ref" -c 'while sleep 3600; do :; done' >/dev/null; then
  exit "$SYSTEM_FAILURE_EXIT_CODE"
fi
