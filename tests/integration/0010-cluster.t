#!/bin/bash
# shellcheck disable=SC2016,SC2119 # job scripts expand on the node; cluster_start takes no args here
# 0010-cluster.t: the private test cluster itself (tests/cluster/phos-cluster):
# both nodes run jobs, batch jobs complete, a second cluster gets its own
# ports, and `stop` leaves no daemon behind.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_integration
plan 14

cluster_start

out=$(sinfo -h -N -p low -o '%N %T' | sort)
is "$out" "n1 idle
n2 idle" "both nodes idle in partition low"

out=$(sinfo -h -o '%P %a' | sort)
is "$out" "high up
low* up" "partitions low (default) and high are up"

out=$(srun_out -w n1 printenv SLURMD_NODENAME)
is "$out" n1 "srun -w n1 runs on n1"
out=$(srun_out -w n2 printenv SLURMD_NODENAME)
is "$out" n2 "srun -w n2 runs on n2"
out=$(srun_out -N2 -l printenv SLURMD_NODENAME | sort)
is "$out" "0: n1
1: n2" "srun -N2 runs one task on each node"

out=$(batch_run -w n2 --wrap 'echo batch on $SLURMD_NODENAME; srun printenv SLURM_STEP_ID')
rc=$?
ok $rc "sbatch job completes"
is "$out" "batch on n2
0" "batch script and its step ran on n2"

key_mode=$(stat -c %a "$CLUSTER/munge.key")
is "$key_mode" 600 "munge key is private to root"
is "$(stat -c %a "$CLUSTER/phos.key")/$(stat -c %s "$CLUSTER/phos.key")" 600/32 "phos.key is 0600, 32 bytes"

# a second cluster at the same time: its own ports, its own jobs
c2=$(mktemp -d "${PHOS_TEST_TMPDIR:-/tmp}/phos-it-c2.XXXXXX")
at_exit '"$PHOS_CLUSTER_CMD" stop "$c2" >/dev/null 2>&1; rm -rf "$c2"'
if out2=$(PHOS_CLUSTER_NO_PHOSD=1 "$PHOS_CLUSTER_CMD" --builddir "$top_builddir" start "$c2" 2>&1); then
	p1=$(sed -n 's/^SlurmctldPort=//p' "$CLUSTER/slurm.conf")
	p2=$(sed -n 's/^SlurmctldPort=//p' "$c2/slurm.conf")
	ok "$([ "$p1" != "$p2" ] && echo 0 || echo 1)" "second cluster uses other ports ($p1 vs $p2)"
	out=$(SLURM_CONF=$c2/slurm.conf timeout 60 srun -w n1 printenv SLURM_CLUSTER_NAME 2>&1)
	is "$out" phos "second cluster runs a job"
else
	ok 1 "second cluster starts" || diag "$out2"
	skip "no second cluster"
fi
"$PHOS_CLUSTER_CMD" stop "$c2" >/dev/null 2>&1

# stop leaves nothing: no process whose command line names the cluster dir
check "phos-cluster stop" "$PHOS_CLUSTER_CMD" stop "$CLUSTER"
left=$(pgrep -a -f -- "$CLUSTER/|$c2/" || true)
is "$left" "" "no daemon of either cluster survives stop"
"$PHOS_CLUSTER_CMD" stop "$CLUSTER" >/dev/null 2>&1
ok $? "stop is idempotent"

done_testing
