# lib-ckpt.sh: helpers of the checkpoint scenarios on the test cluster
# (02*.t), sourced after lib.sh.
# shellcheck shell=bash disable=SC2016,SC2034,SC2154
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
