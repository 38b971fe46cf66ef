#!/bin/bash
# step_after_ckpt.sh - does a leave-running checkpoint slow the training
# steps that come after it?  tests/gpu/train.py (small GPT, 60 steps) is
# checkpointed once at step 15, leave-running, in three ways:
#   driver    no libphos: the driver checkpoint API + CRIU (stop-the-world)
#   snapshot  under libphos: buffers detached, copied on the GPU, handed back
#   cow       under libphos, PHOS_GPU_NO_SNAPSHOT=1: saved while it trains
# and, for comparison, not at all (none).  Prints per way the median step
# time (ms) of steps 5-14, of 17-30 and of 31-60.  A benchmark: exits 0
# unless a run failed.  Environment as tests/gpu/lib.sh (PHOS_BIN, W,
# LOG_DIR); PYTHON (python3).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/gpu/lib.sh
. "$here/../tests/gpu/lib.sh"
PYTHON=${PYTHON:-python3}
train=$here/../tests/gpu/train.py
export CUBLAS_WORKSPACE_CONFIG=:4096:8
rc=0

median() {	# median FILE FIRST LAST: of the steptime lines FIRST..LAST
	awk -v a="$2" -v b="$3" '$1 == "steptime" && $2 >= a && $2 <= b { print $3 }' "$1" |
		sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); else printf "-" }'
}

table=$(printf '%-9s %10s %10s %10s   %s' way "5-14" "17-30" "31-60" "checkpoint")
one() {	# one WAY [PREFIX...]: a run, checkpointed at step 15 unless WAY is none
	local way=$1 d=$W/steps-$1 line="-"
	shift
	mkdir -p "$d"
	start_app "$d/out" "$@" "$PYTHON" "$train" 60 0.05
	if ! wait_for "$d/out" '^step 15 ' 240; then
		log "$way: the run did not get to step 15"; tail -5 "$d/out"; kill -9 "$APP_PID"; rc=1; return
	fi
	if [ "$way" != none ]; then
		if ckpt "$APP_PID" --leave-running; then
			line=$(sed -n 's/.*(\(.*\))$/\1/p' <<<"$CKPT_LINE")
			rm -rf "$IMG" "$(dirname "$IMG")/chunks"
		else
			log "$way: checkpoint failed: $CKPT_LINE"; rc=1
		fi
	fi
	if ! wait_for "$d/out" '^DONE' 240; then
		log "$way: the run did not finish"; tail -5 "$d/out"; kill -9 "$APP_PID"; rc=1; return
	fi
	table+=$(printf '\n%-9s %10s %10s %10s   %s' "$way" "$(median "$d/out" 5 14)" \
		"$(median "$d/out" 17 30)" "$(median "$d/out" 31 60)" "$line")
}

start_phosd || exit 1
trap stop_phosd EXIT
one none
one driver
one snapshot "${UNDER_LIBPHOS[@]}"
stop_phosd; sleep 0.5
PHOS_GPU_NO_SNAPSHOT=1 start_phosd || exit 1
one cow "${UNDER_LIBPHOS[@]}"
echo
echo "==== training step time (ms, medians) before and after one leave-running checkpoint at step 15"
echo "$table"
exit $rc
