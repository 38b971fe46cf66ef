#!/bin/bash
# storage.sh - how fast phos-gpu moves GPU buffers to and from image files,
# against dd on the same target in the same run (issue [8]).
#
#   bench/storage.sh [BUILD_DIR]
#
# On a machine without a GPU it runs phos-gpu on the fake driver
# (tests/fakecuda: device memory is host memory), which measures the file
# side of the engine (threads, chunks, O_DIRECT) and nothing of PCIe; on a
# GPU node set PHOS_REAL_DRIVER=1 (the buffers are then real GPU memory
# handed over as on a checkpoint: run bench/bench.sh for those figures).
#
# Environment: TARGETS (directories, default "/dev/shm /var/tmp"), NBUF and
# MIB (buffers, default 8 x 256 MiB), THREADS (default "1 4 8"), DIRECT_IO
# (default "0 1": O_DIRECT off and on), CHANGED (default 10: the share of
# chunks a second, incremental save finds changed), ZSTD (zstd levels to
# measure a full save with, e.g. "1 3"; default none: compression is off
# by default).  Needs root to drop the page cache
# before the read runs (otherwise they read from memory, and say so).
# Prints one line per run: the whole phos-gpu run (start, import, copy,
# fsync) and, in parentheses, its copy phase alone (the engine); nothing
# here is a pass/fail test.
set -u
here=$(cd "$(dirname "$0")" && pwd)
B=${1:-$here/../build}
GPU=$B/daemon/phos-gpu
FAKE=$B/tests/fakecuda/.libs
TARGETS=${TARGETS:-/dev/shm /var/tmp}
NBUF=${NBUF:-8} MIB=${MIB:-256}
THREADS=${THREADS:-1 4 8}
DIRECT_IO=${DIRECT_IO:-0 1}
CHANGED=${CHANGED:-10}
ZSTD=${ZSTD:-}
bytes=$((NBUF * MIB << 20))

[ -x "$GPU" ] || { echo "storage.sh: no $GPU: build first (BUILD_DIR)" >&2; exit 2; }
if [ "${PHOS_REAL_DRIVER:-0}" != 1 ]; then
	[ -e "$FAKE/libcuda.so.1" ] || { echo "storage.sh: no fake driver in $FAKE (make check builds it)" >&2; exit 2; }
	export LD_LIBRARY_PATH=$FAKE${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
feed=$(mktemp -d)/gpu_feed
trap 'rm -rf "$(dirname "$feed")"' EXIT
cc -O2 -o "$feed" "$here/gpu_feed.c" || exit 2

drop() {	# drop the page cache: reads then come from the device
	sync
	if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; echo cold; else echo warm; fi
}
rate() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.2f GB/s", (s > 0 ? b / 1e9 / s : 0) }'; }
dd_secs() {	# dd's elapsed seconds from its last line
	LC_ALL=C dd "$@" 2>&1 | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) print $(i-1) }'
}

echo "storage.sh: $NBUF x $MIB MiB = $((bytes >> 20)) MiB per run; phos-gpu $GPU;" \
	"driver: $([ "${PHOS_REAL_DRIVER:-0}" = 1 ] && echo real || echo fake) ; $(nproc) CPUs"
for t in $TARGETS; do
	d=$t/phos-storage-bench.$$
	mkdir -p "$d" || continue
	fs=$(stat -f -c %T "$t")
	echo "== $t ($fs, $(df -h --output=avail "$t" | tail -1 | tr -d ' ') free)"
	s=$(dd_secs if=/dev/zero of="$d/dd.bin" bs=8M count=$((bytes >> 23)) conv=fsync)
	echo "  dd write (8 MiB blocks, fsync):       $(rate "$s")"
	s=$(dd_secs if=/dev/zero of="$d/dd.bin" bs=8M count=$((bytes >> 23)) oflag=direct conv=fsync)
	[ -n "$s" ] && echo "  dd write (8 MiB blocks, O_DIRECT):    $(rate "$s")"
	c=$(drop)
	s=$(dd_secs if="$d/dd.bin" of=/dev/null bs=8M)
	echo "  dd read  ($c):                        $(rate "$s")"
	rm -f "$d/dd.bin"
	for dio in $DIRECT_IO; do
		for th in $THREADS; do
			# as phosd lays it out: generations beside the task's chunk store
			rm -rf "$d/g1" "$d/g2" "$d/chunks"
			mkdir -p "$d/g1" "$d/g2" "$d/chunks"
			env=(PHOS_GPU_IO_THREADS=$th PHOS_GPU_DIRECT_IO=$dio)
			out=$(env "${env[@]}" "$feed" save "$GPU" "$d/g1" "$NBUF" "$MIB" 2>&1)
			s=$(sed -n 's/^seconds //p' <<<"$out")
			w="$(rate "$s") ($(sed -n 's/.*copy \([0-9.]* GB\/s\).*/\1/p' <<<"$out") copying)"
			grep -q 'phos-gpu: saved' <<<"$out" || echo "    save failed: $out"
			c=$(drop)
			out=$(env "${env[@]}" "$feed" load "$GPU" "$d/g1" 2>&1)
			s=$(sed -n 's/^seconds //p' <<<"$out")
			printf '  phos-gpu %d threads, O_DIRECT %s:  save %s, load (%s) %s (%s copying)\n' "$th" \
				"$([ "$dio" = 1 ] && echo on || echo off)" "$w" "$c" "$(rate "$s")" \
				"$(sed -n 's/.*copy \([0-9.]* GB\/s\).*/\1/p' <<<"$out")"
			grep -q 'phos-gpu: loaded' <<<"$out" || echo "    load failed: $out"
			# the next periodic checkpoint, CHANGED % of the chunks changed
			out=$(env "${env[@]}" "$feed" save "$GPU" "$d/g2" "$NBUF" "$MIB" "$CHANGED" 2>&1)
			s=$(sed -n 's/^seconds //p' <<<"$out")
			printf '    next generation, %d %% changed: %.2f s (full save %.2f s); %s\n' "$CHANGED" \
				"$s" "$(awk -v r="${w%% GB/s*}" -v b="$bytes" 'BEGIN { print (r > 0 ? b / 1e9 / r : 0) }')" \
				"$(grep -o '[0-9]* chunk(s) written ([0-9]* MB), [0-9]* already stored ([0-9]* MB)' <<<"$out" ||
				   echo "failed: $out")"
			for z in $ZSTD; do	# a full save again, compressed
				rm -rf "$d/g1" "$d/chunks"; mkdir -p "$d/g1" "$d/chunks"
				out=$(env "${env[@]}" GPU_FEED_ZSTD="$z" GPU_FEED_DATA=bf16 "$feed" save "$GPU" "$d/g1" "$NBUF" "$MIB" 0 2>&1)
				s=$(sed -n 's/^seconds //p' <<<"$out")
				printf '    zstd level %s (bf16 weights, N(0, 0.02)): save %s, %s\n' "$z" \
					"$(rate "$s")" "$(grep -o 'zstd level [0-9]*: [0-9]* MB stored' <<<"$out" || grep -o '[0-9]* chunk(s) written ([0-9]* MB)' <<<"$out" || echo "failed: $out")"
			done
		done
	done
	rm -rf "$d"
done
