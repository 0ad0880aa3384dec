#!/bin/sh
# GitLab Runner custom executor, cleanup_exec: remove the job container.
# The image stays in the daemon; imgcache gc --docker removes it once the
# job's hold and the min-age have passed and a limit asks for the space.
set -u
. "$(dirname "$0")/base.sh"
docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
