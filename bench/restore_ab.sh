#!/bin/bash
# restore_ab.sh - where a restored PyTorch process's first step goes
# (issue [7]: 2.0 s from `phosctl restore`), several ways in one run, so
# that one machine's speed does not decide between them (MODES, default
# "cold cold-nora warm"):
#   cold       the page cache dropped before the restore (a job requeued to
#              another node), the read-ahead of the process's files (and,
#              first, of criu's) on: the default
#   cold-nora  the same with PHOS_NO_PREFETCH=1: nothing read ahead
#   cold-noheads  the same with PHOS_PREFETCH_NO_HEADS=1: the read-ahead
#              without the first 64 KiB of every file before the ranges
#   cold-readahead  the same with PHOS_PREFETCH_READAHEAD=1: everything
#              queued at once with readahead(2), as before session 15
#   warm       DROP_CACHES=0: the page cache kept (a restore on the node the
#              process ran on, the staging pool's case)
# Each is bench/torch_size.sh at SIZE GiB through a staging pool of SIZE + 2
# GiB: of hugetlb pages, or with POOL=pinned one the NVIDIA driver pins
# (gpu_stage_pool_pinned: the restore loads it straight to the GPU); with
# POOL=none no pool at all, the buffers loaded from storage (W's file
# system), as after a requeue to another node.  Prints
# one line a run: CRIU's part (getting to CRIU + its run + after it; what of
# the run its log does not cover, before its first line and after its
# last), CRIU's waits after its "Opening ... vma" lines (a mapped file's
# ELF headers read; criu_open_waits), the image check beside CRIU, the driver's restore, the read-ahead,
# the first 256 kernel launches after the reattach, the load's rate (phos-gpu's
# "copy N GB/s") and how many buffers the process asked for before they
# were loaded, the first step, and whether the losses were identical.
# Root, a GPU; sets vm.nr_hugepages for the run and puts it back.
# Environment: SIZE (8), STEPS (300; 200 with LEAVE_RUNNING=0, which skips
# the leave-running checkpoint and suits SIZE=64), MODES, POOL (hugetlb,
# pinned or none), OUT (/tmp/phos-restore-ab), and tests/gpu/lib.sh's.  About 5
# minutes at 8 GiB on an H200; about 3 minutes a mode at 64 GiB with
# POOL=pinned LEAVE_RUNNING=0 (most of it writing the image to storage).
set -u
here=$(cd "$(dirname "$0")" && pwd)
SIZE=${SIZE:-8}
STEPS=${STEPS:-300}
MODES=${MODES:-cold cold-nora warm}
POOL=${POOL:-hugetlb}
OUT=${OUT:-/tmp/phos-restore-ab}
pool=$((SIZE + 2))
# shellcheck source=tests/gpu/lib.sh
. "$here/../tests/gpu/lib.sh"
# shellcheck disable=SC2086
read_ahead_modes restore_ab $MODES || exit 2
mkdir -p "$OUT"
export W
case $POOL in
hugetlb) reserve_hugepages restore_ab "$pool" || exit 2; pinned=false ;;
pinned) HP_OLD=$(cat /proc/sys/vm/nr_hugepages); trap 'echo "$HP_OLD" >/proc/sys/vm/nr_hugepages' EXIT
	echo 0 >/proc/sys/vm/nr_hugepages; pinned=true ;;
none) pool=0; pinned=false ;;
*) echo "restore_ab: POOL is hugetlb, pinned or none, not $POOL" >&2; exit 2 ;;
esac
# num FILE PHRASE: the number after the last "PHRASE N" in FILE
num() { grep -oE "$2 [0-9]+" "$1" | tail -1 | grep -oE '[0-9]+$'; }
# what bounds a load from storage: each chunk's SHA-256 on the CPU
# (session 19: 1.42 GB/s a core, 22.4 on 16 on the H200 host; the load 13)
if [ "$POOL" = none ] && command -v openssl >/dev/null; then
	sha() { openssl speed -seconds 1 -bytes 8388608 -evp sha256 "$@" 2>/dev/null |
		awk '$1 == "sha256" { printf "%.2f", $2 / 1e6 }'; }
	echo "SHA-256 of 8 MiB chunks on this host: $(sha) GB/s on one core," \
		"$(sha -multi "$(nproc)") GB/s on $(nproc) (openssl speed)"
fi
fmt='%-14s %7s %14s %10s %8s %8s %9s %12s %13s %9s %5s %11s %7s\n'
printf "$fmt" run CRIU_ms to+run+after_ms outside_ms opens_ms check_ms driver_ms read_ahead_ms \
	256_launch_ms load_GB/s asked 1st_step_ms losses
k=0
for mode in $MODES; do
	k=$((k + 1))
	out=$OUT/torch_size-$k-$mode.out
	read_ahead_mode "$mode"
	# each run in a clean W: a run cut off leaves its image there
	[ -n "${W:-}" ] && rm -rf "${W:?}/torch_size" "${W:?}/images"
	DROP_CACHES=$DROP STAGE_POOL_GIB=$pool STAGE_POOL_PINNED=$pinned SIZES=$SIZE STEPS=$STEPS \
		bash "$here/torch_size.sh" >"$out" 2>&1
	# its CRIU log, kept by torch_size.sh in W (cleaned for the next run)
	log=$OUT/criu-restore-$k-$mode.log
	cp "${W:-/nonexistent}/torch_size/$SIZE/criu-restore.log" "$log" 2>/dev/null
	opens=-
	[ -s "$log" ] && opens=$(criu_open_waits "$log" | awk '{ print $1 }')
	row=$(awk '$1 == "'"$SIZE"'" && NF == 8 { print }' "$out" | tail -1)
	split=$(grep -oE 'CRIU [0-9]+ ms \([0-9]+ \+ run [0-9]+ \+ [0-9]+\)' "$out" | tail -1 |
		sed -E 's/.*\(([0-9]+) \+ run ([0-9]+) \+ ([0-9]+)\)/\1+\2+\3/')
	edges=$(grep -oE 'outside its log: [0-9]+ ms before its first line.*, [0-9]+ ms after' "$out" |
		tail -1 | grep -oE '[0-9]+ ms' | awk '{ printf "%s%s", n++ ? "/" : "", $1 }')
	printf "$fmt" "$mode" "$(num "$out" 'CRIU')" "${split:--}" "${edges:--}" "$opens" \
		"$(num "$out" 'checked beside it in')" "$(num "$out" 'driver')" \
		"$(grep -oE 'read ahead \([0-9]+ range\(s\).*\) in [0-9]+' "$out" | tail -1 | grep -oE '[0-9]+$' || echo -)" \
		"$(num "$out" 'after the reattach: the last')" \
		"$(grep -oE 'loaded [0-9]+ buffer.* copy [0-9.]+ GB/s' "$out" | tail -1 |
		   grep -oE '[0-9.]+ GB/s$' | cut -d' ' -f1 || echo -)" \
		"$(grep -oE 'the [0-9]+ buffer\(s\) the process asked for' "$out" | tail -1 |
		   grep -oE '[0-9]+' || echo 0)" "$(awk '{ print $7 }' <<<"$row")" \
		"$(awk '{ print $8 }' <<<"$row")"
done
echo "(outputs in $OUT; outside_ms: CRIU's run before its log's first line / after its last;"
echo " opens_ms: CRIU's waits after its \"Opening ... vma\" lines;"
echo " the goal of [7] is 2000 ms to the first step)"
