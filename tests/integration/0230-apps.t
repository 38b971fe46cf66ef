#!/bin/bash
# shellcheck disable=SC2119,SC2016,SC2034 # no cluster_start args; job scripts and eval strings expand later; shared helpers
# 0230-apps.t: issue [3] scenario 6 on the two-node cluster with real CRIU:
# a multi-threaded Python task and a task whose counting is done by a
# forked child process are both preempted, checkpointed, requeued and
# restored, and go on where they were (every number once, the threads alive
# and working after the restore).
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_integration
require_built daemon/phosd daemon/phosctl daemon/phos-restore tests/progs/phos-counter \
	spank/.libs/spank_phos.so preload/.libs/libphos.so
command -v criu >/dev/null || skip_all "criu not installed"
[ -x /usr/bin/python3 ] || skip_all "/usr/bin/python3 not installed"
plan 14

# ---- checkpoint scenario helpers (the same block in each 02*.t) -------------
counter=$top_builddir/tests/progs/phos-counter
phosctl=$top_builddir/daemon/phosctl

# job_script FILE CMD...: a batch script that says which run and node it is
# and runs CMD as one srun step.
job_script() {
	local f=$1
	shift
	{
		echo '#!/bin/bash'
		echo 'echo "run ${SLURM_RESTART_COUNT:-0} on $SLURMD_NODENAME"'
		echo "srun -n1 $*"
		echo 'echo "script end rc $?"'
	} >"$f"
}

# out_has FILE ERE: the file has a matching line.
out_has() { grep -qE -- "$2" "$1" 2>/dev/null; }

# wait_out FILE ERE SECONDS: bounded wait for a line; diagnostics on timeout.
wait_out() {
	wait_for "$3" out_has "$1" "$2" && return 0
	diag "no line /$2/ in $1 after $3 s"
	diag_file "$1" 30
	return 1
}

# job_on JOBID STATE NODE RESTARTS: the job is in STATE on NODE after RESTARTS requeues.
job_on() {
	[ "$(job_state "$1")" = "$2" ] && [ "$(job_field "$1" NodeList)" = "$3" ] &&
		[ "$(job_field "$1" Restarts)" = "$4" ]
}

# wait_job_on JOBID STATE NODE RESTARTS SECONDS
wait_job_on() {
	wait_for "$5" job_on "$1" "$2" "$3" "$4" && return 0
	diag "job $1 not $2 on $3 with Restarts=$4 after $5 s"
	job_diag "$1"
	return 1
}

# continuity FILE N: "count 1" .. "count N" each exactly once, in order, and
# "done N"; prints what is wrong.
continuity() {
	awk -v n="$2" '
		$1 == "count" && $2 ~ /^[0-9]+$/ { k = $2; seen[k]++; if (k != last + 1) bad = bad " " last "->" k; last = k }
		/^done / { done = $2 }
		END {
			for (i = 1; i <= n; i++) if (seen[i] != 1) { miss = miss " " i "x" (seen[i] + 0); if (length(miss) > 200) break }
			if (bad != "") print "out of order:" bad
			if (miss != "") print "not exactly once:" miss
			if (done != n) print "no \"done " n "\" line"
			exit (bad != "" || miss != "" || done != n)
		}' "$1"
}

# images_of JOB: the job's image directories under the shared store.
images_of() { find "$CLUSTER/images" -mindepth 2 -maxdepth 2 -name "$1" 2>/dev/null; }
no_images_of() { [ -z "$(images_of "$1")" ]; }

# phosd_log_has NODE ERE
phosd_log_has() { grep -qE -- "$2" "$CLUSTER/phosd.$1.log"; }

cluster_start
at_exit 'scancel ${P:-} ${F:-} ${H1:-} ${H2:-} 2>/dev/null'

N=250
job_script "$CLUSTER/p.sh" "/usr/bin/python3 $top_srcdir/tests/progs/phos-threads.py $N 100"
job_script "$CLUSTER/f.sh" "$counter --fork $N 100"
outp=$CLUSTER/p.out
outf=$CLUSTER/f.out
P=$(sbatch_job --phos-checkpoint --exclusive --open-mode=append -o "$outp" "$CLUSTER/p.sh")
F=$(sbatch_job --phos-checkpoint --exclusive --open-mode=append -o "$outf" "$CLUSTER/f.sh")
wait_job "$P" RUNNING 30
wait_job "$F" RUNNING 30
np=$(job_field "$P" NodeList)
nf=$(job_field "$F" NodeList)
wait_out "$outp" '^count 20 ' 30
ok $? "the Python job $P runs on $np with its threads"
wait_out "$outf" '^count 20$' 30
ok $? "the forking job $F runs on $nf"

H1=$(sbatch_job -p high -w "$np" --exclusive -o /dev/null --wrap 'sleep 600')
H2=$(sbatch_job -p high -w "$nf" --exclusive -o /dev/null --wrap 'sleep 600')
wait_for 30 phosd_log_has "$np" "checkpoint job $P step 0 task 0 .*generation 1 .* in [0-9]+ ms"
ok $? "the Python task was checkpointed" || diag_file "$CLUSTER/phosd.$np.log" 30
wait_for 30 phosd_log_has "$nf" "checkpoint job $F step 0 task 0 .*generation 1 .* in [0-9]+ ms"
ok $? "the task with a child process was checkpointed" || diag_file "$CLUSTER/phosd.$nf.log" 30
# both requeued (pending behind the high jobs): free the nodes
wait_for 60 eval '[ "$(job_field "$P" Restarts)" = 1 ] && [ "$(job_field "$F" Restarts)" = 1 ]'
ok $? "both jobs were requeued" || { job_diag "$P"; job_diag "$F"; }
scancel "$H1" "$H2"
wait_out "$outp" "^phos: restoring task 0 of job $P from checkpoint generation 1\$" 60
ok $? "the Python task is restored"
wait_out "$outf" "^phos: restoring task 0 of job $F from checkpoint generation 1\$" 60
ok $? "the task with a child process is restored"
wait_job "$P" COMPLETED 90
ok $? "the Python job completed"
wait_job "$F" COMPLETED 90
ok $? "the forking job completed"

msg=$(continuity "$outp" $N)
ok $? "Python: counts 1..$N, each once, in order" || { diag "$msg"; diag_file "$outp" 60; }
# the worker threads kept working after the restore: the sum grows and all 4 are alive
at_restore=$(sed -n '/^phos: restoring/,$p' "$outp" | grep -m1 '^count' | awk '{print $4}')
last=$(grep '^count' "$outp" | tail -1)
ok "$(awk -v a="${at_restore:-0}" '{ exit !($4 > a) }' <<<"$last" && echo 0 || echo 1)" \
	"Python: the threads' sum grew after the restore ($at_restore -> $(awk '{print $4}' <<<"$last"))"
like "$last" "alive 4\$" "Python: all four threads alive at the end"
msg=$(continuity "$outf" $N)
ok $? "fork: counts 1..$N, each once, in order" || { diag "$msg"; diag_file "$outf" 60; }
is "$(grep -c '^forked counter child' "$outf")" 1 "fork: the child was forked once (not again after the restore)"

done_testing
