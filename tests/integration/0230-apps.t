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

# shellcheck source=lib-ckpt.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-ckpt.sh"

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
