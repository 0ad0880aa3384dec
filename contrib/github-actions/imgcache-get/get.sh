#!/bin/sh
# The step of the imgcache-get action: imgcache get, its ref written to the
# step's outputs and the job's environment. imgcache's own message and exit
# code fail the step when the image cannot be made ready.
set -eu
: "${IMGCACHE_NAME:?no image name: set the action's name input}"
ref=$(imgcache get --hold "${IMGCACHE_HOLD:-6h}" "$IMGCACHE_NAME")
echo "ref=$ref" >>"$GITHUB_OUTPUT"
echo "IMGCACHE_REF=$ref" >>"$GITHUB_ENV"
echo "imgcache: $IMGCACHE_NAME is ready as $ref"
