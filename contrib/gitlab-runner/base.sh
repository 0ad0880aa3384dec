# Sourced by the imgcache custom-executor drivers (prepare.sh, run.sh,
# cleanup.sh): the job container's name and the settings they share.
# GitLab Runner passes the job's variables prefixed with CUSTOM_ENV_ and
# the exit codes that mark a build or a system failure.
CONTAINER="imgcache-gitlab-${CUSTOM_ENV_CI_RUNNER_ID:-runner}-${CUSTOM_ENV_CI_JOB_ID:?CUSTOM_ENV_CI_JOB_ID is not set: run this from GitLab Runner's custom executor}"
BUILD_FAILURE_EXIT_CODE=${BUILD_FAILURE_EXIT_CODE:-1}
SYSTEM_FAILURE_EXIT_CODE=${SYSTEM_FAILURE_EXIT_CODE:-2}
# How long imgcache gc keeps the job's image (get --hold): longer than the
# longest job timeout.
IMGCACHE_JOB_HOLD=${IMGCACHE_JOB_HOLD:-3h}
# The shell the runner's generated scripts are for ([[runners]] shell).
IMGCACHE_JOB_SHELL=${IMGCACHE_JOB_SHELL:-bash}
