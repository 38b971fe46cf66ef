#!/bin/bash
# shellcheck disable=SC2016,SC2001 # job scripts are shown literally and expand on the node
# demo.sh - the project's main command (README): build PhOS for Slurm, start
# a private two-node Slurm cluster on this machine (tests/cluster/phos-cluster),
# run a job with --phos-checkpoint and show, step by step, that the plugin is
# active; then scenario 1 of issue [3]: a counting batch job is preempted,
# checkpointed, requeued and restored on the other node, and its output
# proves continuity (which node, which generation, how long the checkpoint
# and the restore took); then stop the cluster.
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

say "6. Scenario 1: a checkpointed batch job is preempted on its node and restored on the other"
counter=$BUILD_DIR/tests/progs/phos-counter
[ -x "$counter" ] || make -C "$BUILD_DIR/tests" progs/phos-counter >/dev/null
[ -x "$counter" ] || fail "$counter was not built"
N=150
jobout=$CLUSTER/demo-counter.out
printf '%s\n' '#!/bin/bash' \
	'echo "run ${SLURM_RESTART_COUNT:-0} on $SLURMD_NODENAME"' \
	"srun -n1 $counter $N 100" >"$CLUSTER/counter.sh"
echo "The job counts 1..$N, one line every 100 ms, with write(2):"
sed 's/^/    /' "$CLUSTER/counter.sh"
id=$(show sbatch --parsable --phos-checkpoint --exclusive --open-mode=append -o "$jobout" "$CLUSTER/counter.sh")
state() { scontrol -o show job "$1" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
field() { scontrol -o show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
waitfor() { # waitfor SECONDS CMD...
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.2
	done
}
running_after() { [ "$(state "$1")" = RUNNING ] && [ "$(field "$1" Restarts)" = "$2" ]; }
waitfor 30 running_after "$id" 0 || fail "job $id does not run"
first=$(field "$id" NodeList)
case $first in n1) second=n2 ;; *) second=n1 ;; esac
waitfor 30 grep -q '^count 30$' "$jobout" || fail "job $id does not count"
echo "job $id runs on $first; its output so far ends with: $(grep '^count' "$jobout" | tail -1)"

echo
echo "A job of the high-priority partition needs $first: Slurm preempts job $id (PreemptMode=REQUEUE,"
echo "GraceTime=10); SIGTERM reaches the task and libphos asks $first's phosd for a checkpoint."
hi=$(show sbatch --parsable -p high -w "$first" --exclusive -o /dev/null --wrap 'sleep 600')
trap 'scancel $hi $id 2>/dev/null; cleanup' EXIT
ckline="checkpoint job $id step 0 task 0 .*generation 1 "
waitfor 30 grep -qE "$ckline" "$CLUSTER/phosd.$first.log" || fail "no checkpoint on $first"
echo "phosd on $first:"
grep -E "job $id step 0 task 0: job is|$ckline" "$CLUSTER/phosd.$first.log" | sed 's/^/    /'
ms=$(grep -E "$ckline" "$CLUSTER/phosd.$first.log" |
	sed -n 's/.* in \([0-9]*\) ms, frozen \([0-9]*\) ms.*/\1 ms (the task was frozen for \2 ms of it)/p')
echo "=> checkpoint generation 1 took $ms"
show "$BUILD_DIR/daemon/phosctl" -s "$CLUSTER/phosd.$first.sock" list --job "$id"
echo "the old task stays frozen until Slurm kills it: its output ends with $(grep '^count' "$jobout" | tail -1)"

echo
echo "At the end of the grace time Slurm kills the old task and requeues the job; $first is busy,"
echo "so the job starts again on $second, where the plugin restores the task instead of starting it."
waitfor 120 running_after "$id" 1 || fail "job $id was not requeued and restarted"
waitfor 30 grep -q '^run 1 on ' "$jobout" || fail "job $id's second run did not start"
echo "job $id: Restarts=$(field "$id" Restarts); its batch script says: $(grep '^run 1 on ' "$jobout")"
waitfor 30 grep -q "job $id step 0 task 0 restored" "$CLUSTER/phosd.$second.log" || fail "no restore on $second"
echo "phosd on $second:"
grep -E "job $id step 0 task 0: restoring|job $id step 0 task 0 restored" "$CLUSTER/phosd.$second.log" |
	sed 's/^/    /'
t0=$(grep -m1 "job $id step 0 task 0: restoring" "$CLUSTER/phosd.$second.log" | cut -d' ' -f1)
t1=$(grep -m1 "job $id step 0 task 0 restored" "$CLUSTER/phosd.$second.log" | cut -d' ' -f1)
tms() { awk -F'[:.]' '{ print (($1 * 60 + $2) * 60 + $3) * 1000 + $4 }' <<<"$1"; }
if [ -n "$t0" ] && [ -n "$t1" ]; then
	echo "=> restore of generation 1 took $(($(tms "$t1") - $(tms "$t0"))) ms" \
		"(image verified, CRIU restore into a fresh pid namespace)"
fi
echo "the job's output around the restore:"
grep -B2 -A3 '^phos: restoring' "$jobout" | grep -v -e '^slurmstepd' -e '^srun' | sed 's/^/    /'

show scancel "$hi"
waitfor 120 eval '[ "$(state "$id")" = COMPLETED ]' || fail "job $id ended $(state "$id")"
echo
echo "job $id COMPLETED after $(grep -c '^run ' "$jobout") runs: $(grep '^run ' "$jobout" | paste -sd, -)"
if awk -v n=$N '/^count [0-9]+$/ { if ($2 != last + 1) bad = 1; last = $2; c++ } END { exit bad || c != n }' "$jobout"; then
	echo "=> continuity: the output counts 1..$N, each number exactly once, in order:"
	echo "   no restart at 1, nothing lost and nothing repeated across the preemption"
else
	sed 's/^/    /' "$jobout"
	fail "the output of job $id is not 1..$N exactly once"
fi
gone() { [ -z "$(find "$CLUSTER/images" -mindepth 2 -maxdepth 2 -name "$id")" ]; }
if waitfor 20 gone; then
	echo "=> the job is finished for good: phosd removed its images"
else
	echo "warning: job $id's images are still there"
fi

say "7. phosd on n1 answers phosctl"
show "$BUILD_DIR/daemon/phosctl" -s "$CLUSTER/phosd.n1.sock" status

say "8. What the plugin logged on n1 (slurmd.n1.log, 'phos:' lines)"
grep 'phos:' "$CLUSTER/slurmd.n1.log" | tail -n 5 || echo "(no phos: lines at this log level)"
