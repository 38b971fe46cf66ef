#!/bin/bash
# shellcheck disable=SC2016,SC2001 # job scripts are shown literally and expand on the node
# demo.sh - the project's main command (README): build PhOS for Slurm, start
# a private two-node Slurm cluster on this machine (tests/cluster/phos-cluster),
# run a job with --phos-checkpoint on node n1 and show, step by step, that
# the plugin was active; then stop the cluster.
#
# Run as root on Debian bookworm.  Environment: PHOS_BUILD_DIR (default
# ./build), PHOS_SKIP_DEPS=1 (skip install-deps.sh), PHOS_DEMO_KEEP=1 (keep
# the cluster's scratch dir for reading its logs).
set -euo pipefail

# shellcheck source=lib-build.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-build.sh"

CLUSTER_CMD=$SRC_DIR/tests/cluster/phos-cluster
CLUSTER=

show() {
	# show CMD...: echo the command, then run it
	printf '$ %s\n' "$*" >&2
	"$@"
}

cleanup() {
	local rc=$?
	if [ -n "$CLUSTER" ]; then
		say "Stopping the cluster"
		"$CLUSTER_CMD" stop "$CLUSTER" || true
		local left
		left=$(pgrep -a -f -- "$CLUSTER/" || true)
		if [ -z "$left" ]; then
			echo "no daemon of the demo cluster is left"
		else
			echo "still running:"; echo "$left"; rc=1
		fi
		if [ "${PHOS_DEMO_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
			echo "cluster files kept in $CLUSTER"
		else
			rm -rf "$CLUSTER"
		fi
	fi
	if [ $rc = 0 ]; then
		printf '\ndemo: done\n'
	else
		printf '\ndemo: FAILED (exit %d)\n' $rc
	fi
	exit $rc
}

need_root
STEP_LOG_DIR=$BUILD_DIR/logs
[ "${PHOS_SKIP_DEPS:-0}" = 1 ] || install_deps
bootstrap if-needed
configure_build
build

for f in spank/.libs/spank_phos.so preload/.libs/libphos.so daemon/phosd daemon/phosctl; do
	[ -e "$BUILD_DIR/$f" ] || fail "$BUILD_DIR/$f was not built"
done

say "1. Starting a private Slurm cluster: munged, slurmctld, slurmd n1 + n2, phosd per node"
CLUSTER=$(mktemp -d /tmp/phos-demo.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
"$CLUSTER_CMD" --builddir "$BUILD_DIR" start "$CLUSTER"
eval "$("$CLUSTER_CMD" env "$CLUSTER")"
show sinfo -N -o '%N %P %T %C'
"$CLUSTER_CMD" status "$CLUSTER" | grep -E '^(munged|slurm|phosd)'

say "2. slurm.conf loads the PhOS SPANK plugin through plugstack.conf"
show cat "$CLUSTER/plugstack.conf"

say "3. srun and sbatch now know the PhOS options"
show srun --help | grep -A2 -E -- '--phos-checkpoint( |$)'
sbatch --help | grep -A1 -E -- '--phos-checkpoint-interval'

say "4. A job step with --phos-checkpoint on n1: the task gets the interposer and its node's phosd"
JOB='echo "node:        $SLURMD_NODENAME (job $SLURM_JOB_ID)"
echo "PHOS_CHECKPOINT=${PHOS_CHECKPOINT:-<unset>}"
echo "PHOS_SOCKET=${PHOS_SOCKET:-<unset>}"
echo "LD_PRELOAD=${LD_PRELOAD:-<unset>}"
echo "libphos.so mapped into the task:"
grep -m1 libphos /proc/$$/maps || echo "  (not mapped)"'
echo "The job step prints its environment and whether libphos.so is mapped into it:"
sed 's/^/    /' <<<"$JOB"
printf '$ srun -w n1 --phos-checkpoint bash -c "$JOB"\n' >&2
out=$(srun -w n1 --phos-checkpoint bash -c "$JOB")
echo "$out"
grep -q '^PHOS_CHECKPOINT=1$' <<<"$out" || fail "the task did not get PHOS_CHECKPOINT=1"
grep -q "^PHOS_SOCKET=$CLUSTER/phosd.n1.sock$" <<<"$out" || fail "the task did not get n1's phosd socket"
grep -q 'libphos\.so' <<<"$(grep -A1 'mapped into' <<<"$out")" || fail "libphos.so is not mapped into the task"
echo "=> the plugin was active: the task runs with libphos.so and knows n1's phosd"

say "5. The same step without --phos-checkpoint: PhOS stays out of the way"
printf '$ srun -w n1 bash -c "$JOB"\n' >&2
out=$(srun -w n1 bash -c "$JOB")
echo "$out"
grep -q '^PHOS_CHECKPOINT=<unset>$' <<<"$out" || fail "a step without the flag got PHOS_CHECKPOINT"

say "6. A batch job with --phos-checkpoint-interval=10m passes the options to its steps"
jobout=$CLUSTER/demo-batch.out
id=$(show sbatch --parsable -w n1 -o "$jobout" --phos-checkpoint --phos-checkpoint-interval=10m \
	--wrap 'srun printenv PHOS_CHECKPOINT PHOS_CHECKPOINT_INTERVAL')
echo "submitted batch job $id"
for _ in $(seq 1 150); do
	st=$(scontrol -o show job "$id" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
	case $st in PENDING | RUNNING | CONFIGURING | COMPLETING | "") sleep 0.2 ;; *) break ;; esac
done
echo "job $id: $st; its step printed:"
sed 's/^/  /' "$jobout"
[ "$st" = COMPLETED ] || fail "batch job $id ended $st"

say "7. phosd on n1 answers phosctl"
show "$BUILD_DIR/daemon/phosctl" -s "$CLUSTER/phosd.n1.sock" status

say "8. What the plugin logged on n1 (slurmd.n1.log, 'phos:' lines)"
grep 'phos:' "$CLUSTER/slurmd.n1.log" | tail -n 5 || echo "(no phos: lines at this log level)"
