#!/bin/sh
# GitLab Runner custom executor, run_exec SCRIPT STAGE: run the script the
# runner generated for this stage inside the job container.
set -eu
. "$(dirname "$0")/base.sh"
script=${1:?usage: run.sh SCRIPT STAGE}
if ! docker exec -i "$CONTAINER" "$IMGCACHE_JOB_SHELL" <"$script"; then
  exit "$BUILD_FAILURE_EXIT_CODE"
fi
