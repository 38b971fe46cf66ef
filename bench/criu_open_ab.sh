#!/bin/bash
# criu_open_ab.sh - what a cold page cache costs CRIU's restore of a process
# that maps many files, read-ahead against none (issue [7]; no GPU needed).
#
# CRIU opens the file of every file-backed mapping of the restored process
# and reads its ELF headers (its build-id check) before it maps it, one
# file after another.  On a cold cache (a job requeued to another node)
# each of those reads waits for the disk, behind the read-ahead of the
# process's pages when that runs (doc/concurrent-restore.md).  The process
# here is python3 with every C extension module of its standard library
# loaded (60-70 files mapped); with APP=torch it also imports PyTorch and
# multiplies two matrices on the CPU (no GPU used: about 100 files and
# 300-400 MiB of file pages, a PyTorch process's read-ahead).  Each run:
# stop checkpoint, page cache dropped (not in warm), `phosctl restore`;
# from the run's CRIU log (kept: phosd runs with PHOS_DEBUG) the sum of the
# waits that follow CRIU's "Opening ... vma" lines, and from phos-restore's
# lines CRIU's whole part and what of it came before its log's first line
# (its exec and start).
# Modes (MODES, default all four), RUNS (3) runs each, on one machine:
#   cold          the read-ahead as built: criu's files, then the first
#                 64 KiB of each file of the process, then its ranges
#   cold-noheads  the same without the heads first
#                 (PHOS_PREFETCH_NO_HEADS=1: the ranges alone)
#   cold-nora     nothing read ahead (PHOS_NO_PREFETCH=1)
#   cold-readahead  the read-ahead queued all at once with readahead(2)
#                 (PHOS_PREFETCH_READAHEAD=1), as before session 15
#   warm          the page cache kept
# Root; tests/gpu/lib.sh's environment (PHOS_BIN: .carry/bin or a build).
# Prints one line a run and the median of each mode.  A benchmark: it
# asserts nothing; exit 1 only when a run broke.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/gpu/lib.sh
. "$here/../tests/gpu/lib.sh"
MODES=${MODES:-cold cold-noheads cold-nora warm}
RUNS=${RUNS:-3}
APP=${APP:-stdlib}
case $APP in
stdlib | torch) ;;
*) echo "criu_open_ab: APP is stdlib or torch, not $APP" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
read_ahead_modes criu_open_ab $MODES || exit 2
mkdir -p "$W" "$LOG_DIR"
app=$W/many_files.py
cat >"$app" <<'PY'
import glob, importlib, os, sys, time
d = os.path.join(os.path.dirname(os.__file__), "lib-dynload")
for p in sorted(glob.glob(os.path.join(d, "*.so"))):
    try:
        importlib.import_module(os.path.basename(p).split(".")[0])
    except Exception:
        pass
if sys.argv[1:] == ["torch"]:
    import torch
    x = torch.ones(512, 512)
    (x @ x).sum().item()
files = {l.split()[-1] for l in open("/proc/self/maps") if len(l.split()) > 5 and l.split()[-1].startswith("/")}
print("ready", len(files), flush=True)
i = 0
while True:
    print("tick", i, flush=True)
    i += 1
    time.sleep(0.05)
PY
BROKE=0
fmt='%-15s %4s %6s %8s %11s %9s %10s %11s\n'
printf "$fmt" mode run files criu_ms before_log log_span open_wait read_ahead
declare -A res
for mode in $MODES; do
	read_ahead_mode "$mode"
	start_phosd >/dev/null || exit 1
	for k in $(seq "$RUNS"); do
		out=$W/criu_open-$mode-$k
		start_app "$out.a" python3 "$app" "$APP"
		disown "$APP_PID"	# (the stop checkpoint kills it: no "Killed" from bash)
		wait_for "$out.a" '^tick 3$' 60 || { log "$mode $k: the program did not start"; BROKE=1; continue; }
		files=$(awk '$1 == "ready" { print $2 }' "$out.a")
		ckpt "$APP_PID" >/dev/null || { log "$mode $k: $CKPT_LINE"; kill -9 "$APP_PID"; BROKE=1; continue; }
		[ "$DROP" = 0 ] || { sync; echo 3 >/proc/sys/vm/drop_caches; }
		restore "$IMG" "$out.b" >/dev/null || { log "$mode $k: restore failed:"; tail -3 "$out.b"; BROKE=1; continue; }
		wait_for "$out.b" "CRIU [0-9]+ ms" 30
		crius=$(grep -oE 'CRIU [0-9]+ ms' "$out.b" | tail -1 | grep -oE '[0-9]+')
		clog=$(grep -ho "CRIU's restore log (PHOS_DEBUG): .*" "$out.b" | tail -1 | sed 's/.*: //')
		before=$(grep -oE 'outside its log: [0-9]+ ms before' "$out.b" | tail -1 | grep -oE '[0-9]+')
		ra=$(grep -oE 'read ahead \(.*\) in [0-9]+' "$out.b" | tail -1 | grep -oE '[0-9]+$')
		read -r ow span < <(criu_open_waits "$clog" 2>/dev/null || echo "- -")
		cp "$clog" "$out.criu.log" 2>/dev/null	# (phosd removes it with its work directory)
		printf "$fmt" "$mode" "$k" "$files" "${crius:--}" "${before:--}" "${span:--}" "${ow:--}" \
			"${ra:--}"
		res[$mode]+="${ow:-} "
		kill -9 "$RESTORED_PID" 2>/dev/null
		rm -rf "${W:?}/images/"*	# (phosd keeps checkpoint_dir itself)
	done
	stop_phosd
	sleep 0.5
done
echo "median wait after CRIU's \"Opening ... vma\" lines (ms):"
for mode in $MODES; do
	printf '  %-15s %s\n' "$mode" "$(tr ' ' '\n' <<<"${res[$mode]:-}" | grep . | sort -n |
		awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] : "-" }')"
done
exit $BROKE
