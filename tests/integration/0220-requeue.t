#!/bin/bash
# shellcheck disable=SC2119,SC2016,SC2034 # no cluster_start args; job scripts and eval strings expand later; shared helpers
# 0220-requeue.t: issue [3] scenarios 2, 3 and 5 on the two-node cluster
# with real CRIU:
#   2. `scontrol requeue` of a running checkpointed job: restored, and its
#      output counts 1..N exactly once;
#   3. --phos-checkpoint-interval: generations appear while the job runs;
#      with the node's phosd stopped no preemption checkpoint can be taken
#      (libphos cannot reach it and lets the app die of its SIGTERM), so the
#      requeued job restores from the newest periodic generation;
#   5. scancel takes no checkpoint and leaves no image behind; a job
#      without the flag shows no trace of the plugin.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_integration
require_built daemon/phosd daemon/phosctl daemon/phos-restore tests/progs/phos-counter \
	spank/.libs/spank_phos.so preload/.libs/libphos.so
command -v criu >/dev/null || skip_all "criu not installed"
plan 26

# shellcheck source=lib-ckpt.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-ckpt.sh"

# gens JOB NODE: the job's valid generation numbers, as phosd on NODE lists them.
gens() {
	"$phosctl" -q -s "$CLUSTER/phosd.$2.sock" list --job "$1" 2>/dev/null |
		awk -v j="$1" '$2 == j && $6 == "yes" { print $5 }'
}
ngens_at_least() { [ "$(gens "$1" "$2" | wc -l)" -ge "$3" ]; }

cluster_start
at_exit 'scancel ${A:-} ${B:-} ${C:-} 2>/dev/null'

# -- 5b. a job without the flag: no trace -----------------------------------------
out=$(srun_out -w n1 bash -c 'echo "env $(env | grep -c "^PHOS_")"; echo "maps $(grep -c libphos /proc/self/maps)"; echo "preload [${LD_PRELOAD:-}]"')
like "$out" '^env 0$' "a job without --phos-checkpoint has no PHOS_* variable"
like "$out" '^maps 0$' "and no libphos mapped"
like "$out" '^preload \[\]$' "and no LD_PRELOAD"
unlike "$(cat "$CLUSTER"/phosd.n[12].log)" "registered job|client pid .*: (register|restore-prepare|task-done)" \
	"and phosd heard nothing from the plugin"

# -- 2. scontrol requeue -------------------------------------------------------
N=200
# two steps: step 0 completes before the requeue, step 1 is the counter
job_script "$CLUSTER/a.sh" "$counter $N 100"
sed -i '2a srun -n1 bash -c "echo first step ran"' "$CLUSTER/a.sh"
outa=$CLUSTER/a.out
A=$(sbatch_job --phos-checkpoint --exclusive --open-mode=append -o "$outa" "$CLUSTER/a.sh")
wait_job "$A" RUNNING 30
na=$(job_field "$A" NodeList)
wait_out "$outa" '^count 20$' 30
ok $? "job $A counts on $na"
scontrol requeue "$A"
wait_for 30 phosd_log_has "$na" "checkpoint job $A step 1 task 0 .*generation 1 .* in [0-9]+ ms"
ok $? "scontrol requeue: phosd on $na checkpointed job $A" || diag_file "$CLUSTER/phosd.$na.log" 30
wait_for 90 eval '[ "$(job_field "$A" Restarts)" = 1 ] && [ "$(job_state "$A")" = RUNNING ]'
ok $? "job $A runs again after the requeue" || job_diag "$A"
wait_out "$outa" "^phos: restoring task 0 of job $A from checkpoint generation 1\$" 30
ok $? "restored from generation 1"
wait_job "$A" COMPLETED 60
ok $? "job $A completed"
msg=$(continuity "$outa" $N)
ok $? "its output counts 1..$N, each number once" || { diag "$msg"; diag_file "$outa" 60; }
like "$(cat "$outa")" "^phos: step 0 task 0 completed before the requeue \\(exit 0\\): not running it again\$" \
	"step 0, complete before the requeue, says it does not run again"
is "$(grep -c '^first step ran$' "$outa")" 1 "and it ran once"

# -- 3. periodic generations; requeue without phosd --------------------------------
N=400
job_script "$CLUSTER/b.sh" "$counter $N 100"
outb=$CLUSTER/b.out
B=$(sbatch_job --phos-checkpoint --phos-checkpoint-interval=10s --exclusive --open-mode=append \
	-o "$outb" "$CLUSTER/b.sh")
wait_job "$B" RUNNING 30
nb=$(job_field "$B" NodeList)
wait_for 40 ngens_at_least "$B" "$nb" 2
ok $? "job $B: periodic checkpoints produce generations 1 and 2" ||
	{ diag "$("$phosctl" -s "$CLUSTER/phosd.$nb.sock" list 2>&1)"; diag_file "$CLUSTER/phosd.$nb.log" 20; }
like "$("$phosctl" -s "$CLUSTER/phosd.$nb.sock" status 2>&1)" "^ +$B +0 +0 +[0-9]+ +[0-9]+ +10s " \
	"phosctl status shows the task with its 10 s interval"
# stop the node's phosd: SIGTERM then finds nobody to checkpoint it
kill "$(cat "$CLUSTER/phosd.$nb.pid")"
wait_for 10 eval '! kill -0 $(cat "$CLUSTER/phosd.'"$nb"'.pid") 2>/dev/null'
newest=$(find "$CLUSTER/images/root/$B/0/0" -mindepth 1 -maxdepth 1 -name '[0-9]*' -printf '%f\n' | sort -n | tail -1)
newest=$((10#$newest))
last_before=$(grep '^count' "$outb" | tail -1 | cut -d' ' -f2)
# requeue and hold: the job must not start again before phosd is back
scontrol requeuehold "$B"
wait_out "$outb" 'task 0: (Terminated|Killed)' 30
ok $? "without phosd the task is not checkpointed: it gets its SIGTERM"
"$top_srcdir/tests/cluster/phos-cluster" --builddir "$top_builddir" phosd-start "$CLUSTER" >/dev/null 2>&1
check "phosd on $nb starts again" test -S "$CLUSTER/phosd.$nb.sock"
ok "$(phosd_log_has "$nb" "job $B .*generation $((newest + 1)) " && echo 1 || echo 0)" \
	"no checkpoint after generation $newest was taken"
scontrol release "$B"
wait_for 90 eval '[ "$(job_field "$B" Restarts)" = 1 ] && [ "$(job_state "$B")" = RUNNING ]'
ok $? "job $B runs again after the requeue" || job_diag "$B"
wait_out "$outb" "^phos: restoring task 0 of job $B from checkpoint generation $newest\$" 30
ok $? "restored from the newest periodic generation ($newest)"
wait_job "$B" COMPLETED 90
ok $? "job $B completed"
# the numbers after the newest periodic checkpoint are counted again, but
# nothing restarts at 1 and nothing is missing
first_after=$(sed -n '/^phos: restoring/,$p' "$outb" | grep -m1 '^count' | cut -d' ' -f2)
ok "$([ "$(grep -c '^count 1$' "$outb")" = 1 ] && [ "${first_after:-0}" -gt 1 ] &&
	[ "${first_after:-0}" -le $((last_before + 1)) ] && echo 0 || echo 1)" \
	"the restored counter went on from its checkpoint ($first_after, killed after $last_before)" ||
	diag_file "$outb" 60
ok "$(awk -v n=$N '/^count /{s[$2]=1} END{for(i=1;i<=n;i++) if(!s[i]) exit 1}' "$outb" &&
	grep -qx "done $N" "$outb" && echo 0 || echo 1)" "every number 1..$N was counted" ||
	diag_file "$outb" 60

# -- 5a. scancel: no checkpoint, no image left -------------------------------------
job_script "$CLUSTER/c.sh" "$counter 1000 100"
outc=$CLUSTER/c.out
C=$(sbatch_job --phos-checkpoint --phos-checkpoint-interval=5s --exclusive --open-mode=append \
	-o "$outc" "$CLUSTER/c.sh")
wait_job "$C" RUNNING 30
nc=$(job_field "$C" NodeList)
wait_for 30 ngens_at_least "$C" "$nc" 1
ok $? "job $C has a periodic generation"
scancel "$C"
wait_job "$C" "$JOB_DONE_STATES" 30
wait_for 20 no_images_of "$C"
ok $? "scancel: job $C's images are removed" || { diag "$(images_of "$C")"; diag_file "$CLUSTER/phosd.$nc.log" 20; }
ok "$(phosd_log_has "$nc" "job $C .*SIGTERM while the job is .*: no checkpoint" && echo 0 || echo 1)" \
	"phosd took no checkpoint for the scancel" || diag_file "$CLUSTER/phosd.$nc.log" 20
unlike "$(cat "$outc")" "^phos: restoring" "and the job was not restored"

done_testing
