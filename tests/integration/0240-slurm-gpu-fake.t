#!/bin/bash
# shellcheck disable=SC2119,SC2016,SC2034 # no cluster_start args; eval strings expand later; shared helpers
# 0240-slurm-gpu-fake.t: the GPU fast path through Slurm, on the fake driver
# (tests/fakecuda), with a staging pool on each node: a job's GPU program
# under `sbatch --phos-checkpoint -w n1` is requeued (`scontrol requeue`);
# phosd on n1 copies its buffers into the pool while it checkpoints the rest
# and lets go of them before storage is written; the requeued job lands on
# n1 again, and phos-restore (run by the SPANK plugin in the new task)
# loads the buffers from that pool, not from storage; the program goes on
# with every word of every buffer as it was.  With gpu_rank_ms the task
# ranks its buffers by first use before phosd takes them, and the image
# records those ranks.  The same on a real GPU (with the pool off):
# tests/gpu/slurm.sh.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_fake_gpu_slurm
plan 9

# shellcheck source=lib-ckpt.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-ckpt.sh"

export PHOS_CLUSTER_YAML="gpu_stage_pool_gib: 1
gpu_rank_ms: 200"
cluster_start
at_exit 'scancel ${A:-} 2>/dev/null'
pool_ready() { phosd_log_has n1 'staging pool: 1 GiB ready'; }
wait_for 60 pool_ready
ok $? "phosd on n1 has its staging pool" || diag_file "$CLUSTER/phosd.n1.log" 20

out=$CLUSTER/a.out
cat >"$CLUSTER/a.sh" <<SH
#!/bin/bash
srun -n1 $top_builddir/tests/progs/fake_gpu_app $out 3 4
SH
chmod +x "$CLUSTER/a.sh"
A=$(sbatch_job --phos-checkpoint --exclusive -w n1 -o "$CLUSTER/a.log" "$CLUSTER/a.sh")
wait_job "$A" RUNNING 30
# in_order: "iter N" lines run 0..k without gap or repeat (the last line,
# maybe half written, left out); prints the first one out of place
in_order() {
	head -n -1 "$out" | awk '$1 == "iter" { if ($2 != n) { print "line " NR ": " $0 " (want " n ")"; bad = 1; exit } n++ }
		END { exit bad }'
}
iter_past() { [ "$(sed -n 's/^iter //p' "$out" 2>/dev/null | tail -1)" -ge "$1" ] 2>/dev/null; }
wait_for 30 iter_past 5
ok $? "job $A runs the GPU program on n1 under libphos (iter $(sed -n 's/^iter //p' "$out" | tail -1))" ||
	{ diag_file "$CLUSTER/a.log" 20; diag_file "$out" 5; }

scontrol requeue "$A"
wait_for 30 phosd_log_has n1 "checkpoint job $A step 0 task 0 .*generation 1 .* in [0-9]+ ms"
ok $? "scontrol requeue: phosd on n1 checkpointed job $A" || diag_file "$CLUSTER/phosd.n1.log" 40
ok "$(phosd_log_has n1 "job $A step 0 task 0 \\(pid [0-9]+\\): the 3 GPU buffer\\(s\\) of pid [0-9]+ \\([0-9]+ bytes\\) released [0-9]+ ms after the checkpoint began \\(in the staging pool" &&
	echo 0 || echo 1)" "its 3 GPU buffers went through the staging pool, and the GPU memory went before storage was written" ||
	diag "$(grep -E 'staging|released|phos-gpu' "$CLUSTER/phosd.n1.log" | tail -8)"
ok "$(phosd_log_has n1 "1 process\\(es\\) rank their GPU buffers by first use for 200 ms" && echo 0 || echo 1)" \
	"with gpu_rank_ms: 200 the task ranked its GPU buffers before phosd took them" ||
	diag "$(grep -E 'rank|detached' "$CLUSTER/phosd.n1.log" | tail -5)"
map=$(find "$CLUSTER" -path "*/$A/0/0/000001/gpumem-*.map" 2>/dev/null | head -1)
is "$(awk 'NF >= 7 && $7 > 0' "$map" 2>/dev/null | wc -l)" 3 \
	"and its image ranks the 3 buffers (a concurrent restore loads them in that order)" ||
	diag_file "${map:-/dev/null}" 5
wait_for 90 eval '[ "$(job_field "$A" Restarts)" = 1 ] && [ "$(job_state "$A")" = RUNNING ]'
ok $? "job $A runs again after the requeue, on $(job_field "$A" NodeList)" || job_diag "$A"
n=$(sed -n 's/^iter //p' "$out" | tail -1)
wait_for 60 iter_past $((n + 5))
# (the last line may be half written: it is left out)
ok "$( iter_past $((n + 5)) && ! grep -q CORRUPT "$out" && in_order >/dev/null &&
	echo 0 || echo 1)" \
	"restored, the program goes on from iter $n with every word of its buffers as it was, no iteration lost or repeated" ||
	{ diag "$(in_order)"; diag_file "$CLUSTER/a.log" 20; diag_file "$out" 5; }
ok "$(phosd_log_has n1 "restore of .*/$A/0/0/000001: its GPU buffers load from the staging pool" && echo 0 || echo 1)" \
	"the restored task's buffers came from n1's staging pool, not from storage" ||
	diag "$(grep -E 'staging|loaded|stage-get' "$CLUSTER/phosd.n1.log" | tail -8)"
scancel "$A"
done_testing
