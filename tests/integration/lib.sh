# lib.sh - shared helpers for the integration tests (TAP, bash).
#
# A test file sources this, calls require_integration, plan N, then
# cluster_start (which arranges cluster_stop on EXIT), and uses ok / is /
# like / run_job.  Tests run against the build tree in $top_builddir
# (set by automake's AM_TESTS_ENVIRONMENT; default: the current dir).
#
# shellcheck shell=bash

set -u

: "${top_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${top_builddir:=$PWD}"
top_srcdir=$(cd "$top_srcdir" && pwd -P)
top_builddir=$(cd "$top_builddir" && pwd -P)
export top_srcdir top_builddir

PHOS_CLUSTER_CMD=$top_srcdir/tests/cluster/phos-cluster
TEST_NAME=$(basename "$0" .t)
T_NUM=0
T_FAIL=0
T_PLANNED=
CLUSTER=

# ---- TAP --------------------------------------------------------------

# diag TEXT...: each argument (each of its lines) as a TAP comment line.
diag() {
	local arg line
	for arg in "$@"; do
		while IFS= read -r line; do printf '# %s\n' "$line"; done <<<"$arg"
	done
}

# diag_file FILE [LINES]: the last lines of FILE as TAP comments.
diag_file() {
	[ -f "$1" ] || { diag "($1 does not exist)"; return 0; }
	diag "---- $1 (last ${2:-25} lines) ----"
	diag "$(tail -n "${2:-25}" "$1")"
}

plan() {
	T_PLANNED=$1
	echo "1..$1"
}

skip_all() {
	echo "1..0 # SKIP $*"
	exit 0
}

bail_out() {
	echo "Bail out! $*"
	exit 1
}

ok() {
	local cond=$1
	shift
	T_NUM=$((T_NUM + 1))
	if [ "$cond" = 0 ]; then
		echo "ok $T_NUM - $*"
	else
		echo "not ok $T_NUM - $*"
		T_FAIL=$((T_FAIL + 1))
	fi
	return "$cond"
}

# check DESCRIPTION CMD...: ok when CMD exits 0; shows its output when not.
check() {
	local desc=$1 out rc=0
	shift
	out=$("$@" 2>&1) || rc=$?
	ok $rc "$desc" || diag "command: $*" "exit $rc" "$out"
	return $rc
}

# is GOT WANT DESCRIPTION
is() {
	if [ "$1" = "$2" ]; then
		ok 0 "$3"
	else
		ok 1 "$3"
		diag "got:  '$1'" "want: '$2'"
		return 1
	fi
}

# like TEXT ERE DESCRIPTION: TEXT has a line matching ERE.
like() {
	if grep -qE -- "$2" <<<"$1"; then
		ok 0 "$3"
	else
		ok 1 "$3"
		diag "no line matches /$2/ in:" "$1"
		return 1
	fi
}

# unlike TEXT ERE DESCRIPTION: no line of TEXT matches ERE.
unlike() {
	if ! grep -qE -- "$2" <<<"$1"; then
		ok 0 "$3"
	else
		ok 1 "$3"
		diag "unexpected match of /$2/ in:" "$1"
		return 1
	fi
}

skip() {
	local n=${2:-1} i
	for ((i = 0; i < n; i++)); do
		T_NUM=$((T_NUM + 1))
		echo "ok $T_NUM # SKIP $1"
	done
}

done_testing() {
	if [ -n "$T_PLANNED" ] && [ "$T_NUM" != "$T_PLANNED" ]; then
		diag "planned $T_PLANNED tests but ran $T_NUM"
		exit 1
	fi
	[ "$T_FAIL" = 0 ]
}

# ---- gates --------------------------------------------------------------

# Skip the whole file unless the integration suite is asked for and we are
# root; skip when a needed program is missing.
require_integration() {
	[ "${PHOS_INTEGRATION:-0}" = 1 ] || skip_all "set PHOS_INTEGRATION=1 to run integration tests"
	[ "$(id -u)" = 0 ] || skip_all "integration tests need root"
	local p
	for p in munged slurmctld slurmd srun sbatch sinfo squeue scontrol; do
		command -v "$p" >/dev/null || skip_all "$p not installed (scripts/install-deps.sh)"
	done
}

# require_built PATH...: skip the file when a build product is missing.
require_built() {
	local f
	for f in "$@"; do
		[ -e "$top_builddir/$f" ] || skip_all "$f not built"
	done
}

# require_fake_gpu_slurm: what a Slurm scenario with a GPU program on the
# fake driver (tests/fakecuda) needs, else skip; then the fake driver for
# every process started from here on (slurmd passes the environment to
# slurmstepd, sbatch to the job), its checkpoint state kept in the
# processes themselves.
require_fake_gpu_slurm() {
	require_integration
	require_built daemon/phosd daemon/phos-restore daemon/phos-gpu tests/progs/fake_gpu_app \
		spank/.libs/spank_phos.so preload/.libs/libphos.so tests/fakecuda/.libs/libcuda.so.1
	command -v criu >/dev/null || skip_all "criu not installed"
	export LD_LIBRARY_PATH=$top_builddir/tests/fakecuda/.libs FAKECUDA_CKPT_REMOTE=1
}

# ---- bounded waiting ----------------------------------------------------

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds; false on
# timeout.
wait_for() {
	local t=$1 end
	shift
	end=$((SECONDS + t))
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.2
	done
}

# ---- cluster -------------------------------------------------------------

# cluster_start [DIR]: start a private cluster in a fresh scratch dir
# (default: a new dir under ${PHOS_TEST_TMPDIR:-/tmp}) and export the client
# environment.  cluster_stop runs on EXIT, whatever happens.
cluster_start() {
	local out rc=0
	CLUSTER=${1:-$(mktemp -d "${PHOS_TEST_TMPDIR:-/tmp}/phos-it-$TEST_NAME.XXXXXX")}
	trap _lib_exit EXIT
	trap 'exit 130' INT TERM
	out=$("$PHOS_CLUSTER_CMD" --builddir "$top_builddir" start "$CLUSTER" 2>&1) || rc=$?
	if [ $rc != 0 ]; then
		diag "$out"
		bail_out "phos-cluster start $CLUSTER failed"
	fi
	diag "$out"
	eval "$("$PHOS_CLUSTER_CMD" env "$CLUSTER")"
	# srun and sbatch pass our environment to the tasks: keep PHOS_*
	# settings of the test run (PHOS_INTEGRATION, ...) out of it.
	local v
	for v in $(compgen -e PHOS_); do export -n "${v?}"; done
}

# at_exit CMD: run CMD (eval'ed) at exit, before the cluster stops.
AT_EXIT=()
at_exit() {
	AT_EXIT+=("$1")
	trap _lib_exit EXIT
}

_lib_exit() {
	local rc=$? c
	for c in "${AT_EXIT[@]}"; do eval "$c" || true; done
	cluster_stop "$rc"
}

# cluster_stop [RC]: stop the cluster; keep its dir when a test failed, RC
# is non-zero or PHOS_TEST_KEEP=1, so its logs can be read; remove it
# otherwise.
cluster_stop() {
	local rc=${1:-0}
	[ -n "$CLUSTER" ] || return 0
	"$PHOS_CLUSTER_CMD" stop "$CLUSTER" >/dev/null 2>&1 || true
	if [ "$rc" = 0 ] && [ "$T_FAIL" = 0 ] && [ "${PHOS_TEST_KEEP:-0}" != 1 ]; then
		rm -rf "$CLUSTER"
	else
		echo "# cluster files kept in $CLUSTER" >&2
	fi
	CLUSTER=
}

# cluster_logs: the tail of every daemon log, as TAP comments.
cluster_logs() {
	local f
	for f in "$CLUSTER"/slurmctld.log "$CLUSTER"/slurmd.n[12].log "$CLUSTER"/phosd.n[12].log; do
		[ -f "$f" ] && diag_file "$f" 15
	done
}

# ---- jobs -----------------------------------------------------------------

JOB_DONE_STATES="COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL OUT_OF_MEMORY BOOT_FAIL DEADLINE PREEMPTED"

# job_state JOBID: the job's state (PENDING, RUNNING, COMPLETED, ...).
job_state() {
	scontrol -o show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'
}

# job_field JOBID FIELD: one field of `scontrol show job`.
job_field() {
	scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

_job_in_state() {
	local st
	st=$(job_state "$1")
	[[ " $2 " == *" $st "* ]]
}

# wait_job JOBID "STATE..." [SECONDS]: wait until the job reaches one of the
# states; on timeout print the job, its output and the logs as diagnostics.
wait_job() {
	local id=$1 states=$2 t=${3:-60}
	if wait_for "$t" _job_in_state "$id" "$states"; then
		return 0
	fi
	diag "job $id not in [$states] after ${t}s: it is $(job_state "$id")"
	job_diag "$id"
	return 1
}

# job_diag JOBID: the job record and its stdout file.
job_diag() {
	local out
	diag "$(scontrol show job "$1" 2>&1)"
	out=$(job_field "$1" StdOut)
	[ -n "$out" ] && diag_file "$out" 40
	cluster_logs
}

# sbatch_job ARGS...: submit, print the job id.
sbatch_job() {
	sbatch --parsable "$@" | cut -d';' -f1
}

# batch_run ARGS...: sbatch ARGS, wait (bounded) until the job ends, print
# its output file on stdout; exit 0 only when the job COMPLETED.  On failure
# the job record, its output and the daemon logs go to stderr (the test log).
batch_run() {
	local id out
	out=$(mktemp "$CLUSTER/job.XXXXXX")
	if ! id=$(sbatch_job -o "$out" "$@" 2>&1); then
		echo "sbatch $* failed: $id" >&2
		return 1
	fi
	if wait_job "$id" "$JOB_DONE_STATES" 60 >&2 && [ "$(job_state "$id")" = COMPLETED ]; then
		cat "$out"
		return 0
	fi
	echo "job $id ended $(job_state "$id")" >&2
	job_diag "$id" >&2
	return 1
}

# srun_out ARGS...: run srun with a bounded time; stdout+stderr on stdout,
# srun's exit status as ours.
srun_out() {
	timeout 60 srun "$@" 2>&1
}
