#!/bin/bash
# t-spank-stepd.sh - spank_phos.so inside real slurmstepds of a private
# two-node cluster (tests/cluster/phos-cluster, without phosd): what each
# task sends to phosd, what it prints, and how a restored task is started.
# t-fake-phosd stands in for phosd (its answers set by $fake/mode, its
# requests logged to $fake/log) and t-restore-helper for phos-restore.
# Needs root and the Slurm daemons (skips with 77 otherwise); about a minute.
set -u

so=${PHOS_SPANK_SO:-$PWD/.libs/spank_phos.so}
top_srcdir=${PHOS_TOP_SRCDIR:-$(cd "${srcdir:-.}/.." && pwd)}
top_builddir=${PHOS_TOP_BUILDDIR:-$(cd .. && pwd)}
cluster=$top_srcdir/tests/cluster/phos-cluster
fakephosd=$PWD/t-fake-phosd
helper=${T_RESTORE_HELPER:-$PWD/t-restore-helper}
empty=$PWD/.libs/t-empty.so

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (Slurm daemons)"; exit 77; }
for c in slurmctld slurmd munged srun sbatch squeue; do
	command -v "$c" >/dev/null || { echo "SKIP: $c not installed"; exit 77; }
done
for f in "$cluster" "$fakephosd" "$helper"; do
	[ -x "$f" ] || { echo "SKIP: $f missing"; exit 77; }
done
for f in "$so" "$empty"; do
	[ -f "$f" ] || { echo "FAIL: $f not built"; exit 1; }
done

tmp=$(mktemp -d /tmp/phos-t-spank-stepd.XXXXXX)
DIR=$tmp/cluster
fake=$tmp/fake
mkdir -p "$fake" "$tmp/img"
chmod 755 "$tmp" "$tmp/img"
fake_pids=()
cleanup() {
	for p in "${fake_pids[@]}"; do kill "$p" 2>/dev/null; done
	"$cluster" stop "$DIR" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT

fails=0
n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
diag() { sed 's/^/#   /' <<<"$*" | head -30; }
# check DESCRIPTION CMD...: ok if CMD succeeds, else show $out
check() {
	local desc=$1
	shift
	if "$@"; then ok "$desc"; else not_ok "$desc"; diag "output: $out"; diag "phosd log: $(new_log)"; fi
}
has() { grep -qE -- "$1" <<<"$out"; }
lacks() { ! grep -qE -- "$1" <<<"$out"; }

if ! PHOS_CLUSTER_NO_PHOSD=1 "$cluster" --builddir "$top_builddir" start "$DIR" >"$tmp/start.log" 2>&1; then
	echo "Bail out! phos-cluster start failed"
	diag "$(tail -20 "$tmp/start.log")"
	exit 1
fi
eval "$("$cluster" env "$DIR")"

plugstack() {
	echo "required $so libphos=$empty socket=$DIR/phosd.%n.sock restore_helper=${1:-$helper}" \
		>"$DIR/plugstack.conf"
}
mode() { echo "$1" >"$fake/mode"; }
mark() { mark=$(cat "$fake/log" 2>/dev/null | wc -l); }
new_log() { tail -n +"$((mark + 1))" "$fake/log" 2>/dev/null; }
log_has() { new_log | grep -qE -- "$1"; }
log_count() { new_log | grep -cE -- "$1"; }
# run CMD...: $out = its stdout+stderr, $rc = its status, $job = the job id
run() {
	out=$(timeout 120 "$@" 2>&1 </dev/null)
	rc=$?
	job=$(scontrol show jobs 2>/dev/null | sed -n 's/^JobId=\([0-9]*\).*/\1/p' | sort -n | tail -1)
}
show='echo "task=$SLURM_PROCID pid=$$ node=$SLURMD_NODENAME preload=[$LD_PRELOAD] sock=[$PHOS_SOCKET]"'

plugstack

# 1. No phosd on the node: the task runs, unprotected, and says so.
mark
run srun -N1 -n1 --phos-checkpoint sh -c "$show"
check "no phosd: the task runs" [ "$rc" = 0 ]
check "no phosd: 'checkpointing disabled' on the task's stderr" \
	has "^phos: checkpointing disabled for task 0: cannot reach phosd at $DIR/phosd.n1.sock"
check "no phosd: no LD_PRELOAD" has "task=0 .*preload=\[\] sock=\[\]"

for node in n1 n2; do
	setsid "$fakephosd" "$DIR/phosd.$node.sock" "$fake" "$node" </dev/null >>"$fake/stderr" 2>&1 &
	fake_pids+=($!)
done
for _ in $(seq 50); do
	[ -S "$DIR/phosd.n1.sock" ] && [ -S "$DIR/phosd.n2.sock" ] && break
	sleep 0.1
done

# 2. Fresh start: REGISTER with the task's own pid, on its own node's phosd.
mode ok
mark
run srun -N2 -n2 --phos-checkpoint sh -c "$show"
check "fresh: rc 0" [ "$rc" = 0 ]
for t in 0 1; do
	node=n$((t + 1))
	pid=$(sed -n "s/^task=$t pid=\([0-9]*\) .*/\1/p" <<<"$out")
	check "fresh: task $t preloads libphos and gets its node's socket" \
		has "^task=$t pid=[0-9]+ node=$node preload=\[$empty\] sock=\[$DIR/phosd.$node.sock\]"
	check "fresh: task $t registered on $node with the program's pid ($pid)" \
		log_has "^$node register peer_uid=0 pid=$pid job=$job step=0 task=$t uid=0 gid=0 ms=0$"
done
check "fresh: no restore asked for" [ "$(log_count restore-prepare)" = 0 ]
check "srun-only job: each node's step sends JOB_END" \
	[ "$(log_count "^n[12] job-end peer_uid=0 pid=- job=$job ")" = 2 ]

# 3. A step without the flag: no phosd traffic, no preload (even with a restart count).
mark
run env SLURM_RESTART_COUNT=1 srun -N2 -n2 sh -c "$show"
check "no flag: rc 0, no preload" eval '[ "$rc" = 0 ] && has "task=0 .*preload=\[\]" && has "task=1 .*preload=\[\]"'
check "no flag: no request to phosd" [ -z "$(new_log)" ]
check "no flag: no phos message" lacks 'phos:'

# 4. phosd refuses the task.
mode refuse
mark
run srun -N1 -n1 --phos-checkpoint sh -c "$show"
check "refused: the task runs without preload" eval '[ "$rc" = 0 ] && has "task=0 .*preload=\[\]"'
check "refused: phosd's reason on stderr" \
	has "^phos: checkpointing disabled for task 0: the image store is full$"

# 5. Restarted, no image: starts fresh, says why, registers.
mode enoent
mark
run env SLURM_RESTART_COUNT=1 srun -N1 -n1 --phos-checkpoint sh -c "$show"
check "no image: the task starts fresh with preload" eval '[ "$rc" = 0 ] && has "task=0 .*preload=\[$empty\]"'
check "no image: phosd's reason on stderr" \
	has "^phos: no usable checkpoint for task 0 \(job $job has no checkpoint of task 0\); starting fresh$"
check "no image: RESTORE_PREPARE, then REGISTER" \
	eval 'new_log | grep -E "^n1 (restore-prepare|register)" | cut -d" " -f2 | tr "\n" " " | grep -qx "restore-prepare register "'

# 6. Restarted with an image: the helper restores, the program never runs.
# As an unprivileged user where there is one: the restorer must be root,
# the waiter (the task) the user.
user=root uid=0 gid=0
if id nobody >/dev/null 2>&1 && command -v runuser >/dev/null; then
	user=nobody uid=$(id -u nobody) gid=$(id -g nobody)
fi
mode "image:$tmp/img"
mark
run runuser -u "$user" -- env SLURM_CONF="$SLURM_CONF" SLURM_RESTART_COUNT=2 \
	srun -N2 -n2 --chdir=/ --phos-checkpoint echo SHOULD-NOT-RUN
check "image: the program did not run" lacks SHOULD-NOT-RUN
check "image: the step ends with the restored process's status (7)" [ "$rc" = 7 ]
check "image: both tasks say they are restored" \
	eval 'has "^phos: restoring task 0 of job $job from checkpoint generation 5$" && has "^phos: restoring task 1 of job $job from checkpoint generation 5$"'
check "image: the restorer wrote into the tasks' stdout and stderr" \
	eval '[ "$(grep -c "^restored stdout$" <<<"$out")" = 2 ] && [ "$(grep -c "^restored stderr$" <<<"$out")" = 2 ]'
check "image: no REGISTER, no preload" [ "$(log_count register)" = 0 ]
for t in 0 1; do
	node=n$((t + 1))
	want="$helper
--image
$tmp/img
--control-fd
3
--socket
$DIR/phosd.$node.sock
--job
$job
--step
0
--task
$t
--uid
$uid
--gid
$gid
uid: 0
fds: 3"
	got=$(cat "$tmp/img/restorer.$t.out" 2>&1)
	if [ "$got" = "$want" ]; then
		ok "image: task $t's restorer ran as root with the documented arguments and only its control fd"
	else
		not_ok "image: task $t's restorer arguments"
		diag "got: $got"
		diag "want: $want"
	fi
done

# 7. An image, but the helper cannot be run: fresh start, and why.
plugstack /nonexistent/phos-restore
mark
run env SLURM_RESTART_COUNT=1 srun -N1 -n1 --phos-checkpoint sh -c "$show"
check "no helper: the program runs with preload" eval '[ "$rc" = 0 ] && has "task=0 .*preload=\[$empty\]"'
check "no helper: the reason on stderr" \
	has "^phos: cannot restore task 0 from $tmp/img \(cannot run the restore helper /nonexistent/phos-restore: No such file or directory\); starting fresh$"
check "no helper: registered after all" log_has "^n1 register .* task=0 "
plugstack

# 8. A batch job: its steps are checkpointed, the batch script is not; one
# JOB_END, from the batch script's step.
wait_job() {
	for _ in $(seq 120); do
		[ -z "$(squeue -h -j "$1" -o %T 2>/dev/null)" ] && return 0
		sleep 0.5
	done
	return 1
}
mode ok
for flag in --phos-checkpoint ""; do
	mark
	printf '#!/bin/sh\necho "batch preload=[$LD_PRELOAD]"\nsrun -n1 sh -c %s\n' "'$show'" >"$tmp/job.sh"
	job=$(sbatch --parsable $flag -N1 -n1 -o "$tmp/job.out" "$tmp/job.sh")
	wait_job "$job"
	out=$(cat "$tmp/job.out" 2>&1)
	if [ -n "$flag" ]; then
		check "batch: the script is not preloaded, its step is" \
			eval 'has "^batch preload=\[\]$" && has "^task=0 .*preload=\[$empty\]"'
		check "batch: one REGISTER (the step's task) and one JOB_END" \
			eval '[ "$(log_count "register .* job=$job step=0 task=0 ")" = 1 ] && [ "$(log_count "job-end .* job=$job ")" = 1 ]'
	else
		check "batch without the flag: no request to phosd" [ -z "$(new_log)" ]
	fi
done

echo "1..$n"
[ "$fails" -eq 0 ]
