#!/bin/bash
# restore_ab.sh - where a restored PyTorch process's first step goes
# (issue [7]: 2.0 s from `phosctl restore`), three ways in one run, so that
# one machine's speed does not decide between them:
#   cold       the page cache dropped before the restore (a job requeued to
#              another node), the read-ahead of the process's files on (the
#              default since session 9)
#   cold-nora  the same with PHOS_NO_PREFETCH=1: the process faults its
#              libraries in from disk
#   warm       DROP_CACHES=0: the page cache kept (a restore on the node the
#              process ran on, the staging pool's case)
# Each is bench/torch_size.sh at SIZE GiB through a staging pool of SIZE + 2
# GiB.  Prints one line a run: CRIU's and the driver's restore, the image
# check beside CRIU, the read-ahead, the first 256 kernel launches after
# the reattach, the first step, and whether the losses were identical.
# Root, a GPU; sets vm.nr_hugepages for the run and puts it back.
# Environment: SIZE (8), STEPS (300), OUT (/tmp/phos-restore-ab), and
# tests/gpu/lib.sh's.  About 5 minutes at 8 GiB on an H200.
set -u
here=$(cd "$(dirname "$0")" && pwd)
SIZE=${SIZE:-8}
STEPS=${STEPS:-300}
OUT=${OUT:-/tmp/phos-restore-ab}
pool=$((SIZE + 2))
mkdir -p "$OUT"
# shellcheck source=tests/gpu/lib.sh
. "$here/../tests/gpu/lib.sh"
reserve_hugepages restore_ab "$pool" || exit 2
# first: what one value of a "NAME N ms" phrase says in FILE
num() { grep -oE "$2 [0-9]+" "$1" | tail -1 | grep -oE '[0-9]+$'; }
printf '%-10s %8s %8s %9s %12s %13s %11s %7s\n' run CRIU_ms check_ms driver_ms \
	read_ahead_ms 256_launch_ms 1st_step_ms losses
for mode in cold cold-nora warm; do
	out=$OUT/torch_size-$mode.out
	nora=0 drop=1
	[ "$mode" = cold-nora ] && nora=1
	[ "$mode" = warm ] && drop=0
	PHOS_NO_PREFETCH=$nora DROP_CACHES=$drop STAGE_POOL_GIB=$pool SIZES=$SIZE STEPS=$STEPS \
		bash "$here/torch_size.sh" >"$out" 2>&1
	row=$(awk '$1 == "'"$SIZE"'" && NF == 8 { print }' "$out" | tail -1)
	printf '%-10s %8s %8s %9s %12s %13s %11s %7s\n' "$mode" "$(num "$out" 'CRIU')" \
		"$(num "$out" 'checked beside it in')" "$(num "$out" 'driver')" \
		"$(grep -oE 'read ahead \([0-9]+ range\(s\)\) in [0-9]+' "$out" | tail -1 | grep -oE '[0-9]+$' || echo -)" \
		"$(num "$out" 'after the reattach: the last')" "$(awk '{ print $7 }' <<<"$row")" \
		"$(awk '{ print $8 }' <<<"$row")"
done
echo "(outputs in $OUT; the goal of [7] is 2000 ms to the first step)"
