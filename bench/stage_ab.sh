#!/bin/bash
# stage_ab.sh - A/B of phos-gpu's copy into the staging pool, the step that
# decides how soon the GPU is free after a preemption (issue [6]: 64 GB in
# 1.3 x 64 GB / 55 GB/s + 1 s).  First bench/pool_probe.c for SIZE GiB (what
# the hardware gives each way, no phosd involved) and bench/hostpool_probe.c
# (a pool the driver pins once, held as fds), then bench/torch_size.sh
# at SIZE GiB through a pool of SIZE + 2 GiB of hugetlb pages, once for
# each of MODES:
#   pinned    STAGE_POOL_PINNED=true: the pool is host memory the driver
#             pinned when phosd started (gpu_stage_pool_pinned), nothing
#             pinned during the checkpoint
#   pieces    each worker pins a 64 MiB piece of the pool just before its
#             copy (the default)
#   bounce    PHOS_GPU_STAGE_BOUNCE=1: nothing of the pool is pinned; each
#             chunk goes through one of its worker's two pinned buffers
#   bounce16  the same with 16 workers (PHOS_GPU_IO_THREADS=16)
#   pinners   PHOS_GPU_STAGE_PINNERS=2: the pool's pieces pinned ahead by
#             two threads (slower in session 10)
#   default   PHOS_GPU_SYNC_COPY=1: every copy on the context's default
#             stream (sessions 6 and 7)
# Prints one line a run: the rate into the pool, when the GPU was free (and
# the goal), and whether the losses were identical, then the probe's rows.
# Root, a GPU, gcc; sets vm.nr_hugepages for the run and puts it back.
# Environment: SIZE (32), MODES ("pieces bounce"; MODES= runs the probe
# only), STEPS (300), OUT (folder for the runs' output, default
# /tmp/phos-stage-ab), and tests/gpu/lib.sh's.
# About 2.5 minutes a mode at 32 GiB on an H200, plus a minute of probe.
set -u
here=$(cd "$(dirname "$0")" && pwd)
SIZE=${SIZE:-32}
STEPS=${STEPS:-300}
OUT=${OUT:-/tmp/phos-stage-ab}
pool=$((SIZE + 2))
mkdir -p "$OUT"
# shellcheck source=tests/gpu/lib.sh
. "$here/../tests/gpu/lib.sh"
reserve_hugepages stage_ab "$pool" || exit 2
rows=""
probe=$OUT/pool_probe
cuda=${CUDA_HOME:-/usr/local/cuda}
probed="(pool_probe not built: see $OUT/gcc.log)"
if gcc -O2 -pthread -I"$cuda/include" -o "$probe" "$here/pool_probe.c" -L"$cuda/lib64/stubs" \
	-lcuda >"$OUT/gcc.log" 2>&1; then
	"$probe" "$SIZE" 8 64 >"$OUT/pool_probe.out" 2>&1
	probed=$(grep '^POOL' "$OUT/pool_probe.out" | sed -n '2,$p')
fi
# a pool the driver pins once, held as fds (bench/README.md, hostpool_probe.c)
hostprobe=$OUT/hostpool_probe
hosted="(hostpool_probe not built: see $OUT/gcc-hostpool.log)"
if gcc -O2 -pthread -I"$cuda/include" -o "$hostprobe" "$here/hostpool_probe.c" \
	-L"$cuda/lib64/stubs" -lcuda >"$OUT/gcc-hostpool.log" 2>&1; then
	"$hostprobe" "$SIZE" 8 >"$OUT/hostpool_probe.out" 2>&1
	hosted=$(grep '^HOSTPOOL' "$OUT/hostpool_probe.out")
	[ -n "$hosted" ] || hosted="(hostpool_probe printed nothing: see $OUT/hostpool_probe.out)"
fi
for mode in ${MODES-pieces bounce}; do
	out=$OUT/torch_size-$mode.out
	env=()
	case $mode in
	pieces) ;;
	pinned) env=(STAGE_POOL_PINNED=true) ;;
	bounce) env=(PHOS_GPU_STAGE_BOUNCE=1) ;;
	bounce16) env=(PHOS_GPU_STAGE_BOUNCE=1 PHOS_GPU_IO_THREADS=16) ;;
	pinners) env=(PHOS_GPU_STAGE_PINNERS=2) ;;
	default) env=(PHOS_GPU_SYNC_COPY=1) ;;
	*) echo "stage_ab: unknown mode $mode" >&2; continue ;;
	esac
	env "${env[@]}" STAGE_POOL_GIB="$pool" SIZES="$SIZE" STEPS="$STEPS" \
		bash "$here/torch_size.sh" >"$out" 2>&1
	staged=$(grep -oE 'staged: GPU to host memory in [0-9]+ ms, [0-9.]+ GB/s' "$out" | tail -1)
	result=$(grep -oE 'GPU free [0-9]+ ms \(goal [0-9]+\) [A-Z]+' "$out" | tail -1)
	losses=$(awk '$1 == "'"$SIZE"'" { l = $NF } END { print l }' "$out")
	eighths=$(grep -oE 'GB/s: [0-9. ]+\)' "$out" | tail -1)
	rows+=$(printf '%-9s %s; %s; losses %s; eighths (%s' "$mode" \
		"${staged:-no staged copy (see $out)}" "${result:-no result}" "${losses:-?}" \
		"${eighths:-?)}")$'\n'
done
echo "==== staging pool copy, $SIZE GiB of PyTorch buffers, pool of $pool GiB (outputs in $OUT)"
printf '%s' "$rows"
echo "pool_probe, $SIZE GiB, 8 threads (16 where it says):"
echo "$probed"
echo "hostpool_probe, $SIZE GiB, 8 threads:"
echo "$hosted"
