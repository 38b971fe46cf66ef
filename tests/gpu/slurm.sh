#!/bin/bash
# slurm.sh - the Slurm scenarios of tests/integration/0210-preempt.t and
# 0220-requeue.t with a GPU app, on a machine that has an NVIDIA GPU but no
# Slurm, munge or CRIU: everything comes from .carry/ (made on Debian by
# scripts/gpu-carry.sh --slurm BUILDDIR; see tests/gpu/README.md).  A
# private two-node cluster (tests/cluster/phos-cluster: munged, slurmctld,
# slurmd n1 and n2, a phosd per node) runs tests/gpu/app_state.cu as a
# batch job whose step runs under --phos-checkpoint:
#
#   (a) preemption: a job of the `high' partition takes the app's node; phosd
#       checkpoints the app there (its GPU buffers saved by phos-gpu), Slurm
#       requeues the job, it is restored on the other node; preempted there
#       too, it is restored again on the first (a chain of two restores)
#   (b) `scontrol requeue': checkpointed, requeued, restored; the job's first
#       step, complete before the requeue, does not run again
#
# Each restored job must print every iteration once, in order, with the
# checksums of an uninterrupted run (every GPU buffer bit-exact); phosd's
# logs must show the GPU fast path (phos-gpu saved the buffers on the
# checkpointing node, the restored process took its buffers back on the
# restoring one).  Timings come from the logs.  PASS/FAIL lines, a summary,
# exit status 0 when everything passed.
#
# Run as root from the repository root:   tests/gpu/slurm.sh
#
# Environment:
#   NO_GPU=1     the CPU counter (tests/progs/phos-counter) instead of the CUDA
#                app: the Slurm part alone, on a machine without a GPU
#   CONCURRENT_RESTORE=true  gpu_concurrent_restore: true in the nodes'
#                phos.yaml (restored apps run while their buffers load)
#   STAGE_POOL_GIB  gpu_stage_pool_gib of the nodes (default 0): a
#                checkpoint's GPU copy goes through phosd's staging pool, and
#                a restore on the node that checkpointed ((b) when Slurm
#                puts the job back there) must load from that pool
#   HIDE_SYSTEM=1  run in a private mount namespace in which the system's
#                Slurm, munge, CRIU and every library .carry/lib has are
#                empty files: proves, where they are installed, that only
#                the carried ones are used
#   CGROUP_PLUGIN  CgroupPlugin of the cluster's cgroup.conf (default
#                cgroup/v1: it touches no cgroup in this cluster, where Slurm
#                22.05's cgroup/v2 in slurmd wants systemd over dbus and a
#                writable /sys/fs/cgroup; "autodetect" is Slurm's default)
#   ARCH         nvcc's -arch (default sm_90)
#   APP_ARGS     app_state's NBUF MB_PER_BUF (default "6 64")
#   ITERS        iterations (counts with NO_GPU=1) of a job (default 300)
#   SLEEP_MS     pause after each iteration (default 100)
#   ONLY         "a", "b" or "a b" (default): the scenarios to run
#   CARRY        the carried files (default: .carry of this checkout)
#   W            scratch folder (default /dev/shm/phos-slurm when it has
#                80 GiB free, else /tmp/phos-slurm); KEEP=1 keeps the
#                cluster's folder (kept anyway when a test failed)
set -u
here=$(cd "$(dirname "$0")" && pwd -P)
top=$(cd "$here/../.." && pwd -P)
CARRY=${CARRY:-$top/.carry}
NO_GPU=${NO_GPU:-0}
CONCURRENT_RESTORE=${CONCURRENT_RESTORE:-false}
ARCH=${ARCH:-sm_90}
APP_ARGS=${APP_ARGS:-6 64}
ITERS=${ITERS:-300}
SLEEP_MS=${SLEEP_MS:-100}
ONLY=${ONLY:-a b}
if [ -z "${W:-}" ]; then
	shm_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
	if [ "${shm_kb:-0}" -gt $((80 * 1024 * 1024)) ]; then W=/dev/shm/phos-slurm; else W=/tmp/phos-slurm; fi
fi
PHOS_BIN=$CARRY/bin
SLURM=$CARRY/slurm
CLUSTER_CMD=$top/tests/cluster/phos-cluster
DIR=$W/cluster
PASSES=0
FAILS=0
SUMMARY=""

log() { printf '%s %s\n' "$(date +%T)" "$*"; }
pass() { PASSES=$((PASSES + 1)); SUMMARY+="PASS $*"$'\n'; log "PASS $*"; }
fail() { FAILS=$((FAILS + 1)); SUMMARY+="FAIL $*"$'\n'; log "FAIL $*"; }
# check DESCRIPTION CMD...: PASS when CMD succeeds, else FAIL
check() {
	local d=$1
	shift
	if "$@"; then pass "$d"; return 0; fi
	fail "$d"
	return 1
}
die() { log "error: $*"; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (Slurm daemons, phosd, CRIU)"
[ -x "$SLURM/sbin/slurmd" ] || die "$SLURM/sbin/slurmd missing: run scripts/gpu-carry.sh --slurm BUILDDIR on Debian and bring .carry along"
for p in phosd phos-restore phos-gpu libphos.so criu; do
	[ -e "$PHOS_BIN/$p" ] || die "$PHOS_BIN/$p missing (scripts/gpu-carry.sh)"
done
# a copy may have lost the execute bits
chmod u+x "$PHOS_BIN"/* "$SLURM"/sbin/* "$SLURM"/bin/* 2>/dev/null || true
# the carried programs find their libraries through their RUNPATHs: nothing
# of .carry/lib must leak into the apps through the jobs' environment
unset LD_LIBRARY_PATH
mkdir -p "$W"

# ---- HIDE_SYSTEM=1: a mount namespace without the system's copies ----------
hide_system() {
	local empty=$W/hide/empty emptydir=$W/hide/dir f name p need
	mkdir -p "$emptydir"
	: >"$empty"
	chmod 0 "$empty"
	# what the scripts themselves run keeps its libraries (no compiler:
	# the NO_GPU counter is carried; no ss: phos-cluster then reads
	# /proc/net/tcp, as in a container without iproute2)
	need=" "
	for p in bash sh env sed grep awk flock setsid timeout find sort head tail cat date sleep \
		hostname mktemp nproc id tr cut wc df ls mkdir rm cp mv chmod touch readlink dirname \
		basename seq diff cmp; do
		f=$(command -v "$p" 2>/dev/null) || continue
		need+=$(ldd "$f" 2>/dev/null | awk '{print $1}' | tr '\n' ' ')
	done
	for f in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/slurmstepd /usr/sbin/munged \
		/usr/bin/srun /usr/bin/sbatch /usr/bin/scontrol /usr/bin/squeue /usr/bin/sinfo \
		/usr/bin/scancel /usr/bin/sacct /usr/bin/salloc /usr/bin/munge /usr/bin/unmunge \
		/usr/bin/remunge /usr/local/sbin/criu /usr/sbin/criu /usr/local/libexec/phos-slurm/phos-gpu \
		/usr/local/libexec/phos-slurm/phos-restore /usr/bin/ss /usr/sbin/ss; do
		[ ! -e "$f" ] || mount --bind "$empty" "$(readlink -f "$f")" || die "cannot hide $f"
	done
	for f in /usr/lib/x86_64-linux-gnu/slurm-wlm /usr/lib/x86_64-linux-gnu/slurm /etc/slurm \
		/etc/munge /usr/local/etc/phos /etc/phos; do
		[ ! -d "$f" ] || mount --bind "$emptydir" "$f" || die "cannot hide $f"
	done
	for f in "$CARRY"/lib/*; do
		name=${f##*/}
		[[ $need == *" $name "* ]] && { log "HIDE_SYSTEM: keeping the system's $name (the scripts' tools need it)"; continue; }
		while read -r p; do
			[ ! -e "$p" ] || mount --bind "$empty" "$(readlink -f "$p")" || die "cannot hide $p"
		done < <(ldconfig -p | awk -v n="$name" '$1 == n {print $NF}')
	done
	log "HIDE_SYSTEM: the system's Slurm, munge, CRIU and the carried libraries are empty files here"
}
if [ "${HIDE_SYSTEM:-0}" = 1 ] && [ "${PHOS_HIDDEN:-0}" != 1 ]; then
	exec unshare -m --propagation private env PHOS_HIDDEN=1 "$0" "$@"
fi
[ "${PHOS_HIDDEN:-0}" != 1 ] || hide_system

# ---- the app ----------------------------------------------------------------
BIN=$W/bin
mkdir -p "$BIN"
if [ "$NO_GPU" = 1 ]; then
	APP=$PHOS_BIN/phos-counter
	if [ ! -x "$APP" ]; then
		APP=$BIN/phos-counter
		mkdir -p "$W/inc"
		: >"$W/inc/config.h"
		cc -O2 -I"$W/inc" -o "$APP" "$top/tests/progs/phos-counter.c" || die "cannot build phos-counter"
	fi
	APP_CMD="$APP $ITERS $SLEEP_MS"
	PROGRESS='^count [0-9]+$'
	END_RE="^done $ITERS\$"
	seq 1 "$ITERS" | sed 's/^/count /' >"$W/ref.lines"
else
	APP=$BIN/app_state
	if [ -x "$CARRY/gpubin/app_state" ]; then
		cp "$CARRY/gpubin/app_state" "$APP"
	else
		PATH=$PATH:/usr/local/cuda/bin
		command -v nvcc >/dev/null || die "no nvcc (CUDA toolkit in /usr/local/cuda)"
		nvcc -O2 -arch="$ARCH" -o "$APP" "$here/app_state.cu" || die "nvcc failed"
	fi
	# shellcheck disable=SC2086 # APP_ARGS is two numbers
	APP_CMD="$APP $APP_ARGS $ITERS $SLEEP_MS"
	PROGRESS='^iter [0-9]+ '
	END_RE='^DONE$'
	log "uninterrupted reference run: $APP $APP_ARGS $ITERS 0"
	# shellcheck disable=SC2086
	"$APP" $APP_ARGS "$ITERS" 0 >"$W/ref.out" 2>&1 || { tail -5 "$W/ref.out"; die "the reference run failed"; }
	grep -E "$PROGRESS" "$W/ref.out" >"$W/ref.lines"
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
fi
[ "$(wc -l <"$W/ref.lines")" = "$ITERS" ] || die "the reference has $(wc -l <"$W/ref.lines") progress lines, not $ITERS"
GPU_CHECKS=1
[ "$NO_GPU" != 1 ] || GPU_CHECKS=0

# ---- the cluster ----------------------------------------------------------------
stop_cluster() {
	[ -d "$DIR" ] || return 0
	"$CLUSTER_CMD" stop "$DIR" >/dev/null 2>&1 || true
	if [ "$FAILS" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
		rm -rf "$DIR"
	else
		log "cluster files kept in $DIR"
	fi
}
"$CLUSTER_CMD" stop "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
yaml=
[ "$CONCURRENT_RESTORE" != true ] || yaml="gpu_concurrent_restore: true"
STAGE_POOL_GIB=${STAGE_POOL_GIB:-0}
[ "$STAGE_POOL_GIB" = 0 ] || yaml+=$'\n'"gpu_stage_pool_gib: $STAGE_POOL_GIB"
log "starting the cluster in $DIR: Slurm from $SLURM, phosd and criu from $PHOS_BIN (gpu_concurrent_restore: $CONCURRENT_RESTORE)"
trap stop_cluster EXIT
trap 'exit 130' INT TERM
if ! PHOS_SLURM_PREFIX=$SLURM PHOS_CRIU=$PHOS_BIN/criu PHOS_CLUSTER_YAML=$yaml \
	PHOS_CLUSTER_RESTORE_DEBUG=1 PHOS_CLUSTER_CGROUP_PLUGIN=${CGROUP_PLUGIN:-cgroup/v1} "$CLUSTER_CMD" --builddir "$PHOS_BIN" start "$DIR"; then
	FAILS=1
	die "the cluster did not start (logs in $DIR)"
fi
eval "$("$CLUSTER_CMD" env "$DIR")"
for p in srun sbatch scontrol squeue; do
	case $(command -v "$p") in
	"$SLURM"/*) ;;
	*) die "$p is $(command -v "$p"), not the carried one" ;;
	esac
done
# carried_only PID: the process runs a carried program and maps no system
# copy of a library .carry/lib has
carried_only() {
	local pid=$1 exe f bad=0
	exe=$(readlink -f "/proc/$pid/exe") || return 1
	case $exe in
	"$CARRY"/*) ;;
	*) log "pid $pid runs $exe, not a carried program"; return 1 ;;
	esac
	while read -r f; do
		[ ! -e "$CARRY/lib/${f##*/}" ] || { log "pid $pid ($exe) maps the system's $f"; bad=1; }
	done < <(awk '$6 ~ /\.so/ {print $6}' "/proc/$pid/maps" | sort -u | grep -v "^$CARRY/")
	return $bad
}
daemons_carried() {
	local n pid
	for n in munged slurmctld slurmd.n1 slurmd.n2 phosd.n1 phosd.n2; do
		pid=$(cat "$DIR/$n.pid" 2>/dev/null) && carried_only "$pid" || return 1
	done
}
# every slurmstepd of this cluster (its log is under DIR) is the carried one
stepds_carried() {
	local d n=0
	for d in /proc/[0-9]*; do
		[ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
		find "$d/fd" -mindepth 1 -maxdepth 1 -lname "$DIR/*" 2>/dev/null | grep -q . || continue
		carried_only "${d#/proc/}" || return 1
		n=$((n + 1))
	done
	[ "$n" -gt 0 ]
}
check "munged, slurmctld, slurmd and phosd run the carried programs with the carried libraries" daemons_carried
log "Slurm $(grep -m1 -o 'slurmctld version [^ ]*' "$DIR/slurmctld.log" | awk '{print $3}'), $("$PHOS_BIN/criu" --version | head -1)"

# ---- helpers (as tests/integration/lib.sh and lib-ckpt.sh) ---------------------
wait_for() {
	local t=$1 end
	shift
	end=$((SECONDS + t))
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.2
	done
}
job_state() { scontrol -o show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
job_field() { scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
job_is() { [ "$(job_state "$1")" = "$2" ]; }
job_on() { job_is "$1" "$2" && [ "$(job_field "$1" NodeList)" = "$3" ] && [ "$(job_field "$1" Restarts)" = "$4" ]; }
restarted() { job_is "$1" RUNNING && [ "$(job_field "$1" Restarts)" = "$2" ]; }
out_has() { grep -qE -- "$2" "$1" 2>/dev/null; }
log_has() { tail -n +"$2" "$DIR/phosd.$1.log" 2>/dev/null | grep -qE -- "$3"; }
# log_lines NODE MARK ERE: the node's phosd log lines since MARK that match
log_lines() { tail -n +"$2" "$DIR/phosd.$1.log" 2>/dev/null | grep -E -- "$3"; }
mark() { wc -l <"$DIR/phosd.$1.log"; }
# gmark NODE: lines in what phos-gpu said while loading on NODE (phos-cluster's
# DIR/phos-gpu.NODE.log, with PHOS_CLUSTER_RESTORE_DEBUG=1)
gmark() { if [ -f "$DIR/phos-gpu.$1.log" ]; then wc -l <"$DIR/phos-gpu.$1.log"; else echo 0; fi; }
gpu_loaded() { tail -n +$(($2 + 1)) "$DIR/phos-gpu.$1.log" 2>/dev/null | grep -q 'phos-gpu: loaded'; }
now_ms() { date +%s%3N; }
other() { [ "$1" = n1 ] && echo n2 || echo n1; }
diag() {
	local id=$1 out=$2 n
	log "---- job $id"
	scontrol show job "$id" 2>&1 | sed 's/^/    /'
	log "---- $out (last 15 lines)"
	tail -n 15 "$out" 2>/dev/null | sed 's/^/    /'
	for n in n1 n2; do
		log "---- phosd.$n.log (last 15 lines)"
		tail -n 15 "$DIR/phosd.$n.log" | sed 's/^/    /'
	done
}
job_script() {	# job_script FILE [FIRST_STEP_CMD]
	{
		echo '#!/bin/bash'
		# shellcheck disable=SC2016 # expanded in the job
		echo 'echo "run ${SLURM_RESTART_COUNT:-0} on $SLURMD_NODENAME"'
		[ -z "${2:-}" ] || echo "srun -n1 $2"
		echo "srun -n1 $APP_CMD"
		echo 'echo "script end rc $?"'
	} >"$1"
}
# exact NAME OUT: the job's progress lines are the reference's, each once,
# in order, and it printed its end line
exact() {
	local got=$W/$1.lines
	grep -E "$PROGRESS" "$2" >"$got"
	if cmp -s "$got" "$W/ref.lines" && grep -qE "$END_RE" "$2"; then
		return 0
	fi
	log "$1: the progress lines differ from the uninterrupted run's:"
	diff "$got" "$W/ref.lines" | head -10 | sed 's/^/    /'
	grep -qE "$END_RE" "$2" || log "    (no end line)"
	return 1
}
# first_progress_after OUT ERE: true once OUT has a progress line after the
# first line matching ERE
first_progress_after() { sed -n "/$2/,\$p" "$1" | grep -qE "$PROGRESS"; }

# checkpointed NAME NODE MARK JOB STEP GEN: phosd on NODE took generation GEN
# of JOB's task 0 (and, with a GPU, phos-gpu saved its buffers); timings
checkpointed() {
	local name=$1 node=$2 m=$3 job=$4 step=$5 gen=$6 line
	if ! wait_for 60 log_has "$node" "$m" "checkpoint job $job step $step task 0 .*generation $gen .* in [0-9]+ ms"; then
		fail "$name: no checkpoint generation $gen of job $job on $node"
		tail -n 20 "$DIR/phosd.$node.log" | sed 's/^/    /'
		return 1
	fi
	line=$(log_lines "$node" "$m" "checkpoint job $job step $step task 0 .*generation $gen " | tail -1)
	pass "$name: phosd on $node checkpointed job $job (generation $gen)"
	log "  timing: ${line#*: generation "$gen" }"
	if [ "$GPU_CHECKS" = 1 ]; then
		line=$(log_lines "$node" "$m" "GPU buffer\\(s\\), .* saved in .*phos-gpu: saved" | tail -1)
		if [ -n "$line" ]; then
			pass "$name: the GPU fast path saved the buffers on $node"
			log "  timing: ${line#*: }"
		else
			fail "$name: no 'phos-gpu: saved' in phosd's log on $node (the fast path was not taken)"
			log_lines "$node" "$m" "GPU|gpu|cuda|CUDA" | tail -8 | sed 's/^/    /'
		fi
	fi
}

# restored NAME NODE MARK JOB GEN OUT T0 GMARK: the job's task says it is
# restored from GEN on NODE, goes on, and (GPU) phos-gpu loaded its buffers
# (while it ran, with CONCURRENT_RESTORE=true) and it took them back; timings
restored() {
	local name=$1 node=$2 m=$3 job=$4 gen=$5 out=$6 t0=$7 gm=$8 t1 line re
	re="^phos: restoring task 0 of job $job from checkpoint generation $gen\$"
	if ! wait_for 60 out_has "$out" "$re"; then
		fail "$name: job $job was not restored from generation $gen"
		diag "$job" "$out"
		return 1
	fi
	if ! wait_for 60 first_progress_after "$out" "$re"; then
		fail "$name: the restored app of job $job does not make progress"
		diag "$job" "$out"
		return 1
	fi
	t1=$(now_ms)
	pass "$name: job $job restored on $node from generation $gen, $(sed -n "/$re/,\$p" "$out" | grep -m1 -E "$PROGRESS" | cut -c1-40)"
	log "  timing: $((t1 - t0)) ms from the preemption/requeue to the restored app's first step (0.2 s polls)"
	line=$(sed -n "/$re/,\$p" "$out" | grep -m1 -E 'CRIU [0-9]+ ms')
	[ -z "$line" ] || log "  timing (phos-restore): ${line#*: }"
	if [ "$GPU_CHECKS" = 1 ]; then
		if wait_for 20 log_has "$node" "$m" "restored pid [0-9]+ took its [0-9]+ GPU buffer"; then
			line=$(log_lines "$node" "$m" "restored pid [0-9]+ took its [0-9]+ GPU buffer" | tail -1)
			pass "$name: the restored app took its GPU buffers back on $node (${line#*restored })"
		else
			fail "$name: phosd on $node does not say the restored app took its GPU buffers"
			log_lines "$node" "$m" "GPU|gpu|restor" | tail -8 | sed 's/^/    /'
		fi
		if wait_for 30 gpu_loaded "$node" "$gm"; then
			line=$(tail -n +$((gm + 1)) "$DIR/phos-gpu.$node.log" | grep 'phos-gpu: loaded' | tail -1)
			log "  timing: $line"
			if [ "$CONCURRENT_RESTORE" != true ]; then
				pass "$name: phos-gpu loaded the GPU buffers on $node"
			elif grep -q 'while the process ran' <<<"$line"; then
				pass "$name: phos-gpu loaded the GPU buffers on $node while the restored app ran"
			else
				fail "$name: gpu_concurrent_restore is on but the load on $node was not concurrent"
			fi
		else
			fail "$name: no 'phos-gpu: loaded' on $node ($DIR/phos-gpu.$node.log)"
			tail -n 5 "$DIR/phos-gpu.$node.log" 2>/dev/null | sed 's/^/    /'
		fi
	fi
}

# progressed OUT N: OUT has more than N progress lines
progressed() { [ "$(grep -cE "$PROGRESS" "$1")" -gt "$2" ]; }
# restores_and_rc0 OUT N: N restores, and the batch script's srun succeeded
restores_and_rc0() { [ "$(grep -c '^phos: restoring' "$1")" = "$2" ] && grep -q '^script end rc 0$' "$1"; }
first_step_once() {
	[ "$(grep -c '^first step ran$' "$1")" = 1 ] &&
		grep -q '^phos: step 0 task 0 completed before the requeue' "$1"
}
images_gone() { [ -z "$(find "$DIR/images" -mindepth 2 -maxdepth 2 -name "$1" 2>/dev/null)" ]; }

# submit NAME OUT SCRIPT: sbatch SCRIPT under --phos-checkpoint, its output
# appended to OUT; JOB is its id.  False (a FAIL, the job cancelled) unless
# it runs and gets to its 20th step.
submit() {
	local name=$1 out=$2

	JOB=$(sbatch --parsable --phos-checkpoint --exclusive --open-mode=append -o "$out" "$3" | cut -d';' -f1)
	if ! wait_for 60 job_is "$JOB" RUNNING || ! wait_for 120 out_has "$out" "^(iter|count) 20( |\$)"; then
		fail "$name: job $JOB did not get to its 20th step"
		diag "$JOB" "$out"
		scancel "$JOB" 2>/dev/null
		return 1
	fi
}

# preempt NAME FROM TO N: a job of the high partition takes FROM (its id in
# HIGH); job A (output out, the caller's) is checkpointed there, requeued for
# the Nth time and restored on TO
preempt() {
	local name=$1 from=$2 to=$3 n=$4 m gm t0

	m=$(mark "$from")
	t0=$(now_ms)
	HIGH=$(sbatch --parsable -p high -w "$from" --exclusive -o /dev/null --wrap 'sleep 600' | cut -d';' -f1)
	checkpointed "$name" "$from" "$m" "$A" 0 "$n"
	m=$(mark "$to")
	gm=$(gmark "$to")
	if wait_for 90 job_on "$A" RUNNING "$to" "$n"; then
		pass "$name: job $A was requeued and runs again on $to ($(($(now_ms) - t0)) ms after the preemption)"
	else
		fail "$name: job $A does not run again on $to"
		diag "$A" "$out"
	fi
	restored "$name" "$to" "$m" "$A" "$n" "$out" "$t0" "$gm"
}

# ---- (a) preemption ---------------------------------------------------------------
scenario_a() {
	local out=$DIR/a.out A H1 H2 first second
	log "=== (a) preemption by a job of the high partition, restore on the other node, twice"
	job_script "$DIR/a.sh"
	submit a "$out" "$DIR/a.sh" || return
	A=$JOB
	first=$(job_field "$A" NodeList)
	second=$(other "$first")
	pass "a: job $A runs the app on $first"
	check "a: its slurmstepd processes are the carried one with the carried libraries" stepds_carried

	preempt a "$first" "$second" 1
	H1=$HIGH

	# preempted again on the second node: a checkpoint of a restored app
	wait_for 30 progressed "$out" $(($(grep -cE "$PROGRESS" "$out") + 10))
	scancel "$H1"
	preempt a2 "$second" "$first" 2
	H2=$HIGH
	scancel "$H2"

	if wait_for $((ITERS * SLEEP_MS / 1000 + 120)) job_is "$A" COMPLETED; then
		pass "a: job $A completed"
	else
		fail "a: job $A did not complete ($(job_state "$A"))"
		diag "$A" "$out"
	fi
	check "a: its $ITERS steps equal the uninterrupted run's, each once, in order, across two restores" exact a "$out"
	check "a: two restores, the script saw srun succeed" restores_and_rc0 "$out" 2
	if wait_for 30 images_gone "$A"; then
		pass "a: job $A's images are removed after it finished"
	else
		fail "a: job $A's images are still there"
	fi
}

# ---- (b) scontrol requeue ---------------------------------------------------------
scenario_b() {
	local out=$DIR/b.out B node m gm t0 rnode
	log "=== (b) scontrol requeue: checkpoint, requeue, restore"
	job_script "$DIR/b.sh" 'bash -c "echo first step ran"'
	submit b "$out" "$DIR/b.sh" || return
	B=$JOB
	node=$(job_field "$B" NodeList)
	pass "b: job $B runs the app on $node"
	local m1 m2 g1 g2
	m1=$(mark n1)
	m2=$(mark n2)
	g1=$(gmark n1)
	g2=$(gmark n2)
	m=$(mark "$node")
	t0=$(now_ms)
	scontrol requeue "$B"
	checkpointed b "$node" "$m" "$B" 1 1
	if wait_for 90 restarted "$B" 1; then
		rnode=$(job_field "$B" NodeList)
		pass "b: job $B runs again after the requeue, on $rnode ($(($(now_ms) - t0)) ms after it)"
	else
		fail "b: job $B does not run again after the requeue"
		diag "$B" "$out"
		rnode=$node
	fi
	if [ "$rnode" = n1 ]; then m=$m1 gm=$g1; else m=$m2 gm=$g2; fi
	restored b "$rnode" "$m" "$B" 1 "$out" "$t0" "$gm"
	# with a staging pool, a restore on the node that checkpointed loads
	# from that node's pool, not from storage
	if [ "$GPU_CHECKS" = 1 ] && [ "$STAGE_POOL_GIB" != 0 ] && [ "$rnode" = "$node" ]; then
		if tail -n +$((gm + 1)) "$DIR/phos-gpu.$rnode.log" | grep -q 'phos-gpu: loaded .* from the staging pool'; then
			pass "b: restored on $rnode, where it was checkpointed: the buffers came from $rnode's staging pool"
		else
			fail "b: restored on $rnode, where it was checkpointed, but not from its staging pool"
			grep -E 'staging|stage-get' "$DIR/phosd.$rnode.log" | tail -5 | sed 's/^/    /'
		fi
	fi
	if wait_for $((ITERS * SLEEP_MS / 1000 + 120)) job_is "$B" COMPLETED; then
		pass "b: job $B completed"
	else
		fail "b: job $B did not complete ($(job_state "$B"))"
		diag "$B" "$out"
	fi
	check "b: its $ITERS steps equal the uninterrupted run's, each once, in order" exact b "$out"
	check "b: the first step, complete before the requeue, ran once and was not run again" \
		first_step_once "$out"
	check "b: one restore, the script saw srun succeed" restores_and_rc0 "$out" 1
}

[[ " $ONLY " != *" a "* ]] || scenario_a
[[ " $ONLY " != *" b "* ]] || scenario_b

grep -hE 'error|ASan|AddressSanitizer' "$DIR"/phosd.n[12].log | head -5 | sed 's/^/  phosd: /'
echo
echo "==== summary ($([ "$NO_GPU" = 1 ] && echo "NO_GPU: CPU counter" || echo "GPU: app_state $APP_ARGS"), gpu_concurrent_restore: $CONCURRENT_RESTORE, gpu_stage_pool_gib: $STAGE_POOL_GIB): $PASSES passed, $FAILS failed"
printf '%s' "$SUMMARY"
[ "$FAILS" = 0 ]
