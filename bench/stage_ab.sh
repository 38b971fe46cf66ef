#!/bin/bash
# stage_ab.sh - A/B of phos-gpu's copy into the staging pool, the step that
# decides how soon the GPU is free after a preemption (issue [6]: 64 GB in
# 1.3 x 64 GB / 55 GB/s + 1 s).  bench/torch_size.sh at SIZE GiB through a
# pool of SIZE + 2 GiB of hugetlb pages, twice:
#   streams   phos-gpu's workers each copy on a stream of their own (the
#             default since session 8)
#   default   PHOS_GPU_SYNC_COPY=1: every copy on the context's default
#             stream, one after another (sessions 6 and 7)
# then bench/stage_probe.cu's hugetlb rows for SIZE GiB, the rate of memory
# registered piece by piece that no phosd code limits.  Prints one line a
# run: the rate into the pool, when the GPU was free (and the goal), and
# whether the losses were identical.
# Root, a GPU, nvcc; sets vm.nr_hugepages for the run and puts it back.
# Environment: SIZE (32), STEPS (300), OUT (folder for the runs' output,
# default /tmp/phos-stage-ab), ARCH (sm_90), and tests/gpu/lib.sh's.
set -u
here=$(cd "$(dirname "$0")" && pwd)
SIZE=${SIZE:-32}
STEPS=${STEPS:-300}
OUT=${OUT:-/tmp/phos-stage-ab}
ARCH=${ARCH:-sm_90}
pool=$((SIZE + 2))
mkdir -p "$OUT"
# shellcheck source=tests/gpu/lib.sh
. "$here/../tests/gpu/lib.sh"
reserve_hugepages stage_ab "$pool" || exit 2
rows=""
for mode in streams default; do
	out=$OUT/torch_size-$mode.out
	if [ "$mode" = default ]; then sync_copy=1; else sync_copy=0; fi
	PHOS_GPU_SYNC_COPY=$sync_copy STAGE_POOL_GIB=$pool SIZES=$SIZE STEPS=$STEPS \
		bash "$here/torch_size.sh" >"$out" 2>&1
	staged=$(grep -oE 'staged: GPU to host memory in [0-9]+ ms, [0-9.]+ GB/s' "$out" | tail -1)
	result=$(grep -oE 'GPU free [0-9]+ ms \(goal [0-9]+\) [A-Z]+' "$out" | tail -1)
	losses=$(awk '$1 == "'"$SIZE"'" { l = $NF } END { print l }' "$out")
	rows+=$(printf '%-8s %s; %s; losses %s' "$mode" "${staged:-no staged copy (see $out)}" \
		"${result:-no result}" "${losses:-?}")$'\n'
done
probe=$OUT/stage_probe
hugetlb="(stage_probe not built: see $OUT/nvcc.log)"
if nvcc -O2 -std=c++17 -arch="$ARCH" -o "$probe" "$here/stage_probe.cu" >"$OUT/nvcc.log" 2>&1; then
	"$probe" "$SIZE" 8 8 >"$OUT/stage_probe.out" 2>&1
	hugetlb=$(grep 'mode=hugetlb' "$OUT/stage_probe.out")
fi
echo "==== staging pool copy, $SIZE GiB of PyTorch buffers, pool of $pool GiB (outputs in $OUT)"
printf '%s' "$rows"
echo "stage_probe, hugetlb pages registered piece by piece (8 threads, 8/64/256 MiB):"
echo "$hugetlb"
