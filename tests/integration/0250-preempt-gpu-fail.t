#!/bin/bash
# shellcheck disable=SC2119,SC2016,SC2034 # no cluster_start args; eval strings expand later; shared helpers
# 0250-preempt-gpu-fail.t: a requeue (`scontrol requeue`) whose checkpoint
# fails after CRIU's dump, on the fake driver: phos-gpu, writing the GPU
# buffers, is SIGKILLed (as the kernel's OOM killer would).  The tree was
# held at its checkpoint at the dump (libphos's HOLD, so that nothing runs
# past it once Slurm resumes it) and cannot go on: phosd says why the
# checkpoint failed and that the tree stays stopped, lets go of its
# buffers at once (no wait for a reattach that cannot come), tells the
# task; nothing is published, so the requeued job runs the program afresh.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_fake_gpu_slurm
plan 5

# shellcheck source=lib-ckpt.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-ckpt.sh"

# a slow copy on the fake driver (0.4 s a 1 MiB chunk), so that the save
# is still under way when the stand-in kills it
export FAKECUDA_DTOH_DELAY_MS=400
scratch=$(mktemp -d "${PHOS_TEST_TMPDIR:-/tmp}/phos-it-0250.XXXXXX")
at_exit 'rm -rf "$scratch"'
# phos-gpu's stand-in: a save is killed 0.3 s after it starts
cat >"$scratch/phos-gpu" <<SH
#!/bin/bash
if [ "\$1" = save ]; then
	( sleep 0.3; kill -KILL \$\$ ) &
fi
exec $top_builddir/daemon/phos-gpu "\$@"
SH
chmod +x "$scratch/phos-gpu"
export PHOS_CLUSTER_GPU_HELPER=$scratch/phos-gpu
cluster_start
at_exit 'scancel ${A:-} 2>/dev/null'

out=$CLUSTER/a.out
cat >"$CLUSTER/a.sh" <<SH
#!/bin/bash
srun -n1 $top_builddir/tests/progs/fake_gpu_app $out 3 4
SH
chmod +x "$CLUSTER/a.sh"
# (append: the requeued run would truncate what the first one said)
A=$(sbatch_job --phos-checkpoint --exclusive -w n1 --open-mode=append -o "$CLUSTER/a.log" "$CLUSTER/a.sh")
wait_job "$A" RUNNING 30
iter_past() { [ "$(sed -n 's/^iter //p' "$out" 2>/dev/null | tail -1)" -ge "$1" ] 2>/dev/null; }
wait_for 30 iter_past 5
ok $? "job $A runs the GPU program on n1 under libphos" ||
	{ diag_file "$CLUSTER/a.log" 20; diag_file "$out" 5; }
scontrol requeue "$A"
failed() { phosd_log_has n1 "job $A task 0: preemption checkpoint failed: .*phos-gpu was killed by signal 9"; }
wait_for 60 failed
ok $? "the preemption checkpoint fails, and phosd says phos-gpu was killed by signal 9" ||
	diag "$(grep -E 'checkpoint|phos-gpu' "$CLUSTER/phosd.n1.log" | tail -8)"
ok "$(phosd_log_has n1 "checkpoint job $A .*: nothing was published; the tree stays stopped at its checkpoint until Slurm ends it" &&
	! phosd_log_has n1 "did not take its GPU buffers back" && echo 0 || echo 1)" \
	"phosd leaves the tree stopped at its checkpoint and lets its buffers go without waiting for it" ||
	diag "$(tail -12 "$CLUSTER/phosd.n1.log")"
told() { grep -q "phos: the checkpoint for the preemption of job $A failed: .*killed by signal 9.*; the task stays stopped where it was checkpointed" "$CLUSTER/a.log"; }
wait_for 30 told
ok $? "the job's output says the checkpoint failed, why, and what becomes of the task" ||
	diag_file "$CLUSTER/a.log" 10
# no image: the requeued job starts the program again from iteration 0
wait_for 90 eval '[ "$(job_field "$A" Restarts)" = 1 ] && [ "$(job_state "$A")" = RUNNING ]'
fresh() { grep -q "no usable checkpoint for task 0" "$CLUSTER/a.log"; }
wait_for 30 fresh
ok $? "the requeued job finds no checkpoint and starts afresh" ||
	{ job_diag "$A"; diag_file "$CLUSTER/a.log" 10; }
scancel "$A"
done_testing
