#!/bin/bash
# shellcheck disable=SC2016,SC2119 # job scripts expand on the node; cluster_start takes no args here
# 0020-spank-options.t: spank_phos.so in a real Slurm: the options show in
# --help, a step asked to checkpoint gets the interposer and the PhOS
# environment of its own node, a step not asked gets nothing, sbatch passes
# the options to the steps of the job, and bad values are refused.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_integration
require_built spank/.libs/spank_phos.so preload/.libs/libphos.so
plan 15

cluster_start

out=$(SLURM_CONF=$CLUSTER/slurm.conf srun --help 2>&1)
like "$out" '^ +--phos-checkpoint( |$)' "srun --help lists --phos-checkpoint"
out=$(sbatch --help 2>&1)
like "$out" '^ +--phos-checkpoint-interval' "sbatch --help lists --phos-checkpoint-interval"
like "$out" '^ +--phos-checkpoint( |$)' "sbatch --help lists --phos-checkpoint"

# -- a step with --phos-checkpoint on n2 -----------------------------------
out=$(srun_out -w n2 --phos-checkpoint printenv SLURMD_NODENAME PHOS_CHECKPOINT PHOS_SOCKET LD_PRELOAD)
rc=$?
ok $rc "srun -w n2 --phos-checkpoint runs" || diag "$out"
mapfile -t v <<<"$out"
is "${v[0]:-}" n2 "the step runs on n2"
is "${v[1]:-}" 1 "the task sees PHOS_CHECKPOINT=1"
like "${v[2]:-}" "^$CLUSTER/phosd\.n2\.sock\$" "PHOS_SOCKET is n2's phosd socket"
like "${v[3]:-}" "(^|:| )$top_builddir/preload/\.libs/libphos\.so( |:|\$)" "LD_PRELOAD holds libphos.so"

# %n expands per node in a two-node step
out=$(srun_out -N2 -l --phos-checkpoint printenv PHOS_SOCKET | sort)
is "$out" "0: $CLUSTER/phosd.n1.sock
1: $CLUSTER/phosd.n2.sock" "each node's tasks get their own node's socket"

# -- a step without the flag ------------------------------------------------
out=$(srun_out -w n1 env)
ok $? "srun without --phos-checkpoint runs" || diag "$out"
unlike "$out" '^PHOS_' "a step without --phos-checkpoint sees no PHOS_* variable"
unlike "$(grep '^LD_PRELOAD=' <<<"$out")" 'libphos' "and no libphos.so in LD_PRELOAD"

# -- sbatch: options reach the job's steps -----------------------------------
out=$(batch_run -w n1 --phos-checkpoint --phos-checkpoint-interval=10m \
	--wrap 'srun printenv PHOS_CHECKPOINT PHOS_CHECKPOINT_INTERVAL')
rc=$?
ok $rc "sbatch --phos-checkpoint --phos-checkpoint-interval=10m is accepted and the job completes"
is "$out" "1
600" "a step of the batch job sees PHOS_CHECKPOINT=1 and PHOS_CHECKPOINT_INTERVAL=600"

# -- bad values are refused before anything runs ------------------------------
rc=0
out=$(sbatch --phos-checkpoint-interval=banana --wrap true 2>&1) || rc=$?
if [ $rc != 0 ] && grep -q 'phos:.*banana' <<<"$out"; then
	ok 0 "sbatch --phos-checkpoint-interval=banana is refused with a phos: message"
else
	ok 1 "sbatch --phos-checkpoint-interval=banana is refused with a phos: message"
	diag "exit $rc" "$out"
fi

done_testing
