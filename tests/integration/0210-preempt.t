#!/bin/bash
# shellcheck disable=SC2119,SC2016,SC2034 # no cluster_start args; job scripts and eval strings expand later; shared helpers
# 0210-preempt.t: issue [3] scenarios 1 and 4 on the two-node cluster with
# real CRIU.  A batch job with --phos-checkpoint runs a counter; a job of
# the `high` partition preempts it on its node; the counter is checkpointed
# within GraceTime, the job requeued and restored on the other node (the
# first one is busy); preempted there again it is restored again (a chain
# of two), and its output counts 1..N exactly once: no restart at 0, no
# step lost or repeated.  When the job is finished its images are removed.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_integration
require_built daemon/phosd daemon/phosctl daemon/phos-restore tests/progs/phos-counter \
	spank/.libs/spank_phos.so preload/.libs/libphos.so
command -v criu >/dev/null || skip_all "criu not installed"
plan 16

# shellcheck source=lib-ckpt.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-ckpt.sh"

cluster_start
N=300
job_script "$CLUSTER/a.sh" "$counter $N 100"
out=$CLUSTER/a.out
A=$(sbatch_job --phos-checkpoint --exclusive --open-mode=append -o "$out" "$CLUSTER/a.sh")
at_exit 'scancel $A ${H1:-} ${H2:-} 2>/dev/null'
wait_job "$A" RUNNING 30
first=$(job_field "$A" NodeList)
case $first in n1) second=n2 ;; *) second=n1 ;; esac
wait_out "$out" '^count 20$' 30
ok $? "job $A runs the counter on $first"

# -- scenario 1: preemption, restore on the other node --------------------------
H1=$(sbatch_job -p high -w "$first" --exclusive -o /dev/null --wrap 'sleep 600')
wait_for 30 phosd_log_has "$first" "checkpoint job $A step 0 task 0 .*generation 1 .* in [0-9]+ ms"
ok $? "phosd on $first took a preemption checkpoint of job $A (generation 1)" ||
	diag_file "$CLUSTER/phosd.$first.log" 30
wait_job_on "$A" RUNNING "$second" 1 90
ok $? "job $A was requeued and runs again on $second"
wait_out "$out" "^phos: restoring task 0 of job $A from checkpoint generation 1\$" 30
ok $? "its task says it is restored from generation 1"
# the counter goes on from where it was (every number once is checked at the end)
before=$(grep -c '^count' "$out")
wait_for 20 eval '[ "$(grep -c "^count" "$out")" -gt $((before + 10)) ]'
ok $? "the restored counter is counting on $second"
ok "$(grep -c '^count 1$' "$out" | grep -qx 1 && echo 0 || echo 1)" "it did not start again at 1" ||
	diag_file "$out" 40

# -- scenario 4: preempted again, restored again ---------------------------------
scancel "$H1"
H2=$(sbatch_job -p high -w "$second" --exclusive -o /dev/null --wrap 'sleep 600')
wait_for 30 phosd_log_has "$second" "checkpoint job $A step 0 task 0 .*generation 2 .* in [0-9]+ ms"
ok $? "the restored task was checkpointed again on $second (generation 2)" ||
	diag_file "$CLUSTER/phosd.$second.log" 30
wait_job_on "$A" RUNNING "$first" 2 90
ok $? "job $A was requeued again and runs on $first"
wait_out "$out" "^phos: restoring task 0 of job $A from checkpoint generation 2\$" 30
ok $? "restored from generation 2"
scancel "$H2"
wait_job "$A" COMPLETED 90
ok $? "job $A completed"

msg=$(continuity "$out" $N)
ok $? "its output counts 1..$N, each number once, in order" || { diag "$msg"; diag_file "$out" 60; }
like "$(grep '^run ' "$out")" "^run 2 on $first\$" "three runs: the last on $first"
is "$(grep -c '^phos: restoring' "$out")" 2 "two restores"
like "$(cat "$out")" "^script end rc 0\$" "the batch script saw srun succeed"

# -- the images go when the job is finished for good ------------------------------
wait_for 20 no_images_of "$A"
ok $? "job $A's images are removed after it finished" ||
	{ diag "$(images_of "$A")"; diag_file "$CLUSTER/phosd.$first.log" 10; }
unlike "$(cat "$CLUSTER"/phosd.n[12].log)" "error|ASan|AddressSanitizer" "no errors in phosd's logs"

done_testing
