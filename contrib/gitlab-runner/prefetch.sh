#!/bin/sh
# prefetch.sh NAME... — for GitLab Runner's docker executor (no host-side
# hook before the job container starts): make each named image ready in
# the daemon as imgcache/NAME:latest, verified, held for IMGCACHE_PREFETCH_HOLD
# (default 2h) so gc keeps it until the next prefetch. Run it from a timer
# more often than the hold; jobs then use image: imgcache/NAME:latest with
# pull_policy = ["never", "if-not-present"]. Exits non-zero if any name
# failed, after trying them all.
set -u
[ $# -gt 0 ] || { echo "usage: prefetch.sh NAME..." >&2; exit 2; }
status=0
for name in "$@"; do
  if ref=$(imgcache get --hold "${IMGCACHE_PREFETCH_HOLD:-2h}" "$name"); then
    echo "imgcache: $name ready as $ref (imgcache/$name:latest)"
  else
    echo "imgcache: $name could not be made ready (see above)" >&2
    status=1
  fi
done
exit $status
