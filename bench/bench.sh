#!/bin/bash
# bench.sh - stop-the-world GPU checkpoint/restore through phosd, for
# processes holding 1, 8 and 32 GiB of GPU memory (BENCH_SIZES).  Per size:
#   stall       a leave-running checkpoint: from the driver lock until the
#               app runs again (phosd's "process frozen")
#   GPU free    a stop checkpoint: lock + driver checkpoint (phosd's log),
#               after which the GPU memory is released
#   restore     phosctl restore until the restored tree runs (CRIU restore
#               + driver restore + unlock)
#   image       bytes of the image
# then the restored app checks every byte of its GPU memory (VERIFY ok).
# Prints a table.  Run as root on a GPU node; either standalone (starts a
# private phosd, see tests/gpu/lib.sh) or sourced by tests/gpu/run-all.sh.
# BENCH_DEADLINE: seconds of the calling script after which no new size
# starts (default 330).  BENCH_FAST=1: the app runs under libphos.so, so its
# buffers take the fast path (detached before the driver checkpoint, saved
# by phosd's phos-gpu, loaded back at restore; doc/protocol.md); GPU free is
# then when phosd let go of the buffers (its "released ... ms" line).
# BENCH_COW=1 (with BENCH_FAST=1): phosd runs with PHOS_GPU_NO_SNAPSHOT=1,
# so leave-running checkpoints save the buffers while the app runs
# (doc/concurrent-checkpoint.md) instead of copying them on the GPU first.
[ "${BENCH_COW:-0}" = 1 ] && export PHOS_GPU_NO_SNAPSHOT=1
if [ -z "${PHOS_GPU_LIB_LOADED:-}" ]; then
	set -u
	. "$(cd "$(dirname "$0")" && pwd)/../tests/gpu/lib.sh"
	BENCH_BIN=${BENCH_BIN:-$W/bin/app_bench}
	if [ ! -x "$BENCH_BIN" ]; then
		mkdir -p "$(dirname "$BENCH_BIN")"
		nvcc -O2 -arch="${ARCH:-sm_90}" -o "$BENCH_BIN" "$top/bench/app_bench.cu" || exit 1
	fi
	start_phosd || exit 1
	trap stop_phosd EXIT
elif [ "${BENCH_COW:-0}" = 1 ]; then
	stop_phosd; sleep 0.5; start_phosd || exit 1	# with PHOS_GPU_NO_SNAPSHOT
fi

bench_table="$(printf '%-6s %9s %11s %11s %11s %11s %10s %10s %10s %9s %8s %6s\n' GiB stall_ms lr_total_ms incr_tot_ms incr_wr_MB gpu_free_ms restore_ms 1st_step_ms load_GB/s image_GB save_GB/s verify)"
bench_one() {
	local gb=$1 d=$W/bench-$1 stall lrtot free rst bytes verify="-" t0 t1 first="-" load="-" save="-"
	local itot="-" iwr="-"
	mkdir -p "$d"; rm -f /tmp/phos-bench-stop /tmp/phos-bench-touch /tmp/phos-bench-untouch
	local pre=()
	[ "${BENCH_FAST:-0}" = 1 ] && pre=("${UNDER_LIBPHOS[@]}")
	start_app "$d/a.out" "${pre[@]}" "$BENCH_BIN" "$gb" 100000 50
	if ! wait_for "$d/a.out" '^READY' 120; then
		log "bench $gb GiB: app did not start"; tail -3 "$d/a.out"; return 1
	fi
	sleep 1
	ckpt "$APP_PID" --leave-running || { log "bench $gb: leave-running checkpoint failed"; kill -9 "$APP_PID"; return 1; }
	stall=$(sed -n 's/.*process frozen \([0-9]*\) ms.*/\1/p' <<<"$CKPT_LINE")
	lrtot=$(sed -n 's/.*total \([0-9]*\) ms.*/\1/p' <<<"$CKPT_LINE")
	bytes=$(du -sb "$IMG" "$(dirname "$IMG")/chunks" 2>/dev/null | awk '{s += $1} END {print s}')
	rm -rf "$IMG"
	# fast path: a second leave-running checkpoint after the app changed
	# 10 % of its 8 MiB pieces stores only those (the chunk store)
	if [ "${BENCH_FAST:-0}" = 1 ]; then
		touch /tmp/phos-bench-touch
		if wait_for "$d/a.out" '^TOUCHED' 60 && ckpt "$APP_PID" --leave-running; then
			itot=$(sed -n 's/.*total \([0-9]*\) ms.*/\1/p' <<<"$CKPT_LINE")
			iwr=$(grep -o '[0-9]* chunk(s) written ([0-9]* MB)' "$LOG_DIR/phosd.log" | tail -1 |
			      sed 's/.*(\([0-9]*\) MB)/\1/')
			rm -rf "$IMG"
		fi
		touch /tmp/phos-bench-untouch
		wait_for "$d/a.out" '^UNTOUCHED' 60 || log "bench $gb: the app did not undo its change"
	fi
	# the stop checkpoint below writes everything again
	rm -rf "$(dirname "$IMG")/chunks"
	sleep 1
	kill -0 "$APP_PID" || { log "bench $gb: app died after leave-running checkpoint"; return 1; }
	ckpt "$APP_PID" || { log "bench $gb: stop checkpoint failed"; kill -9 "$APP_PID"; return 1; }
	free=$(grep 'CUDA state of .* checkpointed' "$LOG_DIR/phosd.log" | tail -1 |
	       sed -n 's/.*lock \([0-9]*\) ms, checkpoint \([0-9]*\) ms.*/\1 \2/p' | awk '{print $1 + $2}')
	if [ "${BENCH_FAST:-0}" = 1 ]; then	# the buffers outlive the driver checkpoint
		free=$(grep -o 'released [0-9]* ms after the checkpoint began' "$LOG_DIR/phosd.log" |
		       tail -1 | awk '{print $2}')
	fi
	wait "$APP_PID" 2>/dev/null
	[ "${BENCH_FAST:-0}" = 1 ] && save=$(grep -o 'phos-gpu: saved [0-9]* buffer(s), [0-9]* bytes in [0-9]* ms' "$LOG_DIR/phosd.log" |
	       tail -1 | awk '{printf "%.2f", $5 / $8 / 1e6}')
	drop_cache	# the restore reads the image from its device
	t0=$(date +%s%N)
	if restore "$IMG" "$d/b.out"; then
		t1=$(date +%s%N)
		rst=$(( (t1 - t0) / 1000000 ))
		# the restored app's first step: its first "tick N MS" line
		if wait_for "$d/b.out" '^tick [0-9]+ [0-9]+' 60; then
			first=$(awk '/^tick [0-9]+ [0-9]+/ {print $3; exit}' "$d/b.out")
			first=$(( first - t0 / 1000000 ))
		fi
		[ "${BENCH_FAST:-0}" = 1 ] && load=$(grep -o 'phos-gpu: loaded [0-9]* buffer(s), [0-9]* bytes in [0-9]* ms' "$LOG_DIR/phosd.log" |
		       tail -1 | awk '{printf "%.2f", $5 / $8 / 1e6}')
		touch /tmp/phos-bench-stop
		if wait_for "$d/b.out" '^VERIFY' 120; then
			grep -q 'VERIFY ok' "$d/b.out" && verify=ok || verify=BAD
		else
			verify=none
		fi
		rm -f /tmp/phos-bench-stop
	else
		rst=failed; tail -10 "$d/b.out"
	fi
	rm -rf "$IMG" "$(dirname "$IMG")/chunks"
	bench_table+="$(printf '\n%-6s %9s %11s %11s %11s %11s %10s %10s %10s %9.2f %8s %6s' "$gb" "${stall:-?}" "${lrtot:-?}" "$itot" "${iwr:--}" "${free:-?}" "$rst" "$first" "${load:--}" "$(awk -v b="$bytes" 'BEGIN {print b / 1e9}')" "${save:--}" "$verify")"
	log "bench $gb GiB: stall ${stall:-?} ms, GPU free after ${free:-?} ms, restore $rst ms, first step after $first ms, image $bytes bytes, verify $verify"
}
# the storage under the images, in this run: what the copy engine is up against
dd_rate() { LC_ALL=C dd "$@" 2>&1 | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) s = $(i-1); b = $1 } END { if (s > 0) printf "%.2f", b / s / 1e9 }'; }
# reads from the device, not the page cache (tmpfs keeps its pages anyway)
drop_cache() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches; }
mkdir -p "$W/images"
ddw=$(dd_rate if=/dev/zero of="$W/images/dd.bin" bs=8M count=512 conv=fsync)
drop_cache
ddr=$(dd_rate if="$W/images/dd.bin" of=/dev/null bs=8M)
rm -f "$W/images/dd.bin"
log "storage under $W/images: dd write ${ddw:-?} GB/s, read ${ddr:-?} GB/s (4 GiB, 8 MiB blocks, one stream)"
for gb in ${BENCH_SIZES:-1 8 32}; do
	if [ $SECONDS -gt "${BENCH_DEADLINE:-330}" ]; then
		log "bench: skipping $gb GiB (past BENCH_DEADLINE=${BENCH_DEADLINE:-330} s)"
		bench_table+="$(printf '\n%-6s skipped: out of time' "$gb")"
		continue
	fi
	bench_one "$gb"
done
echo
if [ "${BENCH_FAST:-0}" = 1 ] && [ "${BENCH_COW:-0}" = 1 ]; then
	echo "==== bench (fast path, no snapshot: buffers saved by phos-gpu while the app runs, images in $W)"
elif [ "${BENCH_FAST:-0}" = 1 ]; then
	echo "==== bench (fast path: buffers detached and saved by phos-gpu, the rest by the driver API + CRIU, images in $W)"
else
	echo "==== bench (stop-the-world: driver checkpoint API + CRIU, images in $W)"
fi
echo "$bench_table"
echo "(storage under the images: dd write ${ddw:-?} GB/s, read ${ddr:-?} GB/s, one stream)"
echo
