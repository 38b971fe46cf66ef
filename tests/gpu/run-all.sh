#!/bin/bash
# run-all.sh - GPU checkpoint/restore tests through phosd on a machine with
# an NVIDIA GPU (driver >= 570), as root.  Needs nvcc (sm_90 by default:
# ARCH=sm_80 for an A100), PyTorch for (c), CRIU >= 4.1.
#
#   (a) CUDA C: buffers, streams, kernels; stop checkpoint mid-run, restore:
#       every iteration's checksum equals an uninterrupted run's
#   (b) cuBLAS SGEMM loop, the same way
#   (c) PyTorch: a small GPT trained with a fixed seed; loss sequence after
#       checkpoint + restore equals the uninterrupted run's bit for bit
#   (d) leave-running checkpoint; restore into a new process while the
#       original continues, both on the one GPU; both exact
#   (e) restore of that image again, after the original is gone
#   plus: a lock that times out (checkpoint_timeout) leaves the app running
#   (f)-(h) the same under libphos.so: the GPU fast path (large buffers
#       detached, saved by phosd's phos-gpu, reattached / loaded back)
#   (i) the concurrent save (PHOS_GPU_NO_SNAPSHOT=1): the app runs while
#       its buffers are copied; a write through a pointer in device memory
#       is caught by the hash check and the checkpoint taken again
#   (j) concurrent restore (gpu_concurrent_restore: true): CUDA C and
#       PyTorch restored exactly while their buffers load
#   (k) a concurrent restore whose load fails (the chunk store gone, then
#       a corrupt chunk): it fails saying why, the restored app never
#       prints a step the uninterrupted run did not and does not live on,
#       and the image, put right, restores exactly
#   then tests/gpu/counts.sh unless COUNTS=0, and bench/bench.sh and
#   bench/overhead.sh unless NO_BENCH=1 (BENCH_FAST=1: bench.sh under
#   libphos).  ONLY="f g h" runs only those sections.
#
# Logs under LOG_DIR; exit status 0 if every test passed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ARCH=${ARCH:-sm_90}
BIN=$W/bin
export CUBLAS_WORKSPACE_CONFIG=:4096:8

mkdir -p "$BIN" "$LOG_DIR"
log "GPU tests: phosd from $PHOS_BIN, CRIU $CRIU, scratch $W, logs $LOG_DIR"
nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,persistence_mode --format=csv
cat /proc/driver/nvidia/version 2>/dev/null | head -1
ls /proc/driver/nvidia/gpus/ 2>/dev/null && cat /proc/driver/nvidia/gpus/*/information 2>/dev/null | head -8
phos "$CRIU" --version 2>&1 | head -1

build() {	# build NAME SRC [libs]: prebuilt in $PHOS_BIN/../gpubin if there
	local pre=$PHOS_BIN/../gpubin/$1
	if [ -x "$pre" ]; then cp "$pre" "$BIN/$1"; return 0; fi
	nvcc -O2 -arch="$ARCH" -o "$BIN/$1" "$2" "${@:3}"
}
build app_state "$here/app_state.cu" || { log "nvcc failed"; exit 1; }
build app_gemm "$here/app_gemm.cu" -lcublas -Xlinker -rpath -Xlinker /usr/local/cuda/lib64 || { log "nvcc failed"; exit 1; }
build app_bench "$top/bench/app_bench.cu" || { log "nvcc failed"; exit 1; }
start_phosd || exit 1
trap stop_phosd EXIT

# want SECTION: run it (ONLY="a b f ..." runs those sections only; sections:
# a b c de f g h lock i j k; the counts and benches have their own switches)
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

# exact_stop NAME REF_TIMEOUT CMD...: uninterrupted run, then a run that is
# checkpointed (stop) at its 10th progress line and restored
exact_stop() {
	local name=$1 to=$2
	shift 2
	local d=$W/$name
	mkdir -p "$d"
	"$@" >"$d/ref.out" 2>&1 || { fail "$name: uninterrupted run failed"; tail -5 "$d/ref.out"; return; }
	start_app "$d/a.out" "$@"
	if ! wait_for "$d/a.out" '^(iter|step) 10 ' "$to"; then
		fail "$name: app did not get to its 10th step"; tail -5 "$d/a.out"; kill -9 "$APP_PID"; return
	fi
	if ! ckpt "$APP_PID"; then
		fail "$name: checkpoint failed"; kill -9 "$APP_PID" 2>/dev/null; return
	fi
	wait "$APP_PID" 2>/dev/null
	lines "$d/a.out" | tail -1 | sed 's/^/  last line before the checkpoint: /'
	local t0 t1
	t0=$(date +%s%N)
	if ! restore "$IMG" "$d/b.out"; then
		fail "$name: restore failed"; tail -20 "$d/b.out"; return
	fi
	# the restored app's first step (its first progress line; 0.1 s polls)
	if wait_for "$d/b.out" '^(iter|step) [0-9]+ ' "$to"; then
		t1=$(date +%s%N)
		log "$name: first step of the restored app $(( (t1 - t0) / 1000000 )) ms after phosctl restore (polled every 0.1 s)"
	fi
	if ! wait_for "$d/b.out" '^DONE' "$to"; then
		fail "$name: restored app did not finish"; tail -5 "$d/b.out"; kill -9 "$RESTORED_PID"; return
	fi
	cat "$d/a.out" "$d/b.out" >"$d/ab.out"
	if same_as_ref "$name" "$d/ab.out" "$d/ref.out"; then
		pass "$name: $(lines "$d/ref.out" | wc -l) steps after stop-checkpoint + restore equal the uninterrupted run ($CKPT_LINE)"
	else
		fail "$name: state after restore differs"
	fi
	cp "$IMG/manifest.yaml" "$d/manifest.yaml" 2>/dev/null
	rm -rf "$IMG"
}

if want a; then
log "=== (a) CUDA C buffers/streams/kernels"
exact_stop a_state 60 "$BIN/app_state" 6 64 40 100
fi
if want b; then
log "=== (b) cuBLAS GEMM loop"
exact_stop b_gemm 60 "$BIN/app_gemm" 2048 40 100
fi
if want c; then
log "=== (c) PyTorch GPT training"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
	exact_stop c_torch 180 python3 "$here/train.py" 40 0.1
else
	fail "c_torch: no PyTorch with CUDA here"
fi
fi

if want de; then
log "=== (d) leave-running checkpoint, restore while the original runs; (e) restore after it is gone"
d=$W/d_both
mkdir -p "$d"
"$BIN/app_state" 4 64 50 100 >"$d/ref.out" 2>&1
start_app "$d/a.out" "$BIN/app_state" 4 64 50 100
if wait_for "$d/a.out" '^iter 10 ' 60 && ckpt "$APP_PID" --leave-running; then
	orig=$APP_PID
	gpu_pids | tr '\n' ' ' | sed 's/^/  GPU processes after the checkpoint: /'; echo
	if restore "$IMG" "$d/b.out"; then
		sleep 1
		gpu_pids | tr '\n' ' ' | sed 's/^/  GPU processes with the restored copy: /'; echo
		kill -0 "$orig" 2>/dev/null && log "original pid $orig still runs beside restored pid $RESTORED_PID"
		wait_for "$d/a.out" '^DONE' 60; wait_for "$d/b.out" '^DONE' 60
		if same_as_ref d_orig "$d/a.out" "$d/ref.out"; then
			pass "d: original continued exactly after its leave-running checkpoint"
		else
			fail "d: original after leave-running checkpoint"
		fi
		if suffix_of_ref d_copy "$d/b.out" "$d/ref.out"; then
			pass "d: copy restored while the original ran is exact"
		else
			fail "d: copy restored beside the original"
		fi
	else
		fail "d: restore beside the original failed"; tail -20 "$d/b.out"
	fi
	wait "$orig" 2>/dev/null
	sleep 0.5
	if restore "$IMG" "$d/c.out" && wait_for "$d/c.out" '^DONE' 60 && suffix_of_ref e_after "$d/c.out" "$d/ref.out"; then
		pass "e: restore after the original is gone is exact"
	else
		fail "e: restore after the original is gone"; tail -20 "$d/c.out"
	fi
	rm -rf "$IMG"
else
	fail "d: leave-running checkpoint failed"; kill -9 "$APP_PID" 2>/dev/null
fi
fi

# ---- the fast path (DESIGN.md §4): libphos owns the large buffers, phosd
# takes them out before the driver checkpoint and saves them itself
fast_lines() {	# what phosd and phos-restore said about the buffers
	grep -E 'GPU buffer|stay attached|phos-gpu' "$LOG_DIR/phosd.log" | tail -n "${1:-6}" | sed 's/^/  /'
}
if want f; then
log "=== (f) fast path, CUDA C under libphos: stop checkpoint + restore"
mark=$(wc -l <"$LOG_DIR/phosd.log")
exact_stop f_fast 60 "${UNDER_LIBPHOS[@]}" "$BIN/app_state" 6 64 40 100
fast_lines 8
if tail -n +"$mark" "$LOG_DIR/phosd.log" | grep -q 'GPU buffer(s), .* detached' &&
   tail -n +"$mark" "$LOG_DIR/phosd.log" | grep -q 'took its .* GPU buffer'; then
	pass "f: the buffers were detached, saved by phosd and reattached at their addresses after restore"
else
	fail "f: no detach/reattach in the phosd log (the fast path was not taken)"
fi
fi
if want g; then
log "=== (g) fast path, leave-running: the original gets its buffers back and goes on exactly"
d=$W/g_fast; mkdir -p "$d"
"${UNDER_LIBPHOS[@]}" "$BIN/app_state" 4 64 50 100 >"$d/ref.out" 2>&1
start_app "$d/a.out" "${UNDER_LIBPHOS[@]}" "$BIN/app_state" 4 64 50 100
if wait_for "$d/a.out" '^iter 10 ' 60 && ckpt "$APP_PID" --leave-running; then
	fast_lines 4
	# a second checkpoint of the same process: its buffers are now imported
	# memory, which the driver does not export again (libphos hands over the
	# fds it kept)
	# (keep_generations 1: the second image replaces the first; it is the
	# one restored below)
	if wait_for "$d/a.out" '^iter 20 ' 60 && ckpt "$APP_PID" --leave-running; then
		pass "g: a second leave-running checkpoint of the same process ($CKPT_LINE)"
	else
		fail "g: second leave-running checkpoint of the same process"; fast_lines 4
	fi
	wait_for "$d/a.out" '^DONE' 60
	if same_as_ref g_orig "$d/a.out" "$d/ref.out"; then
		pass "g: original continued exactly after detach + leave-running checkpoint + reattach ($CKPT_LINE)"
	else
		fail "g: original after the fast leave-running checkpoint"; tail -5 "$d/a.out"
	fi
	wait "$APP_PID" 2>/dev/null
	if restore "$IMG" "$d/b.out" && wait_for "$d/b.out" '^DONE' 60 && suffix_of_ref g_copy "$d/b.out" "$d/ref.out"; then
		pass "g: its image restores exactly (buffers loaded by phos-gpu)"
	else
		fail "g: restore of the fast leave-running image"; tail -20 "$d/b.out"
	fi
	rm -rf "$IMG"
else
	fail "g: leave-running checkpoint under libphos failed"; tail -5 "$d/a.out"; kill -9 "$APP_PID" 2>/dev/null
fi
fi
if want h; then
log "=== (h) fast path, PyTorch GPT training under libphos: stop checkpoint + restore"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
	exact_stop h_torch 180 "${UNDER_LIBPHOS[@]}" python3 "$here/train.py" 40 0.1
	fast_lines 6
else
	fail "h_torch: no PyTorch with CUDA here"
fi
fi

if want lock; then
log "=== lock timeout: a kernel that outlasts checkpoint_timeout"
# restart phosd with a 1 s checkpoint_timeout; app_bench runs 3 s kernels
stop_phosd; sleep 0.5
CKPT_TIMEOUT=1 start_phosd
d=$W/lock; mkdir -p "$d"
start_app "$d/a.out" "$BIN/app_bench" 1 3 0 3000
if wait_for "$d/a.out" '^READY' 60; then
	sleep 0.5
	t0=$SECONDS
	if ckpt "$APP_PID"; then
		log "  checkpoint went through (the lock did not time out: kernels too short here)"
		restore "$IMG" "$d/b.out" && wait_for "$d/b.out" '^DONE' 120 && cat "$d/b.out"
		rm -rf "$IMG"
	else
		if kill -0 "$APP_PID" 2>/dev/null && wait_for "$d/a.out" '^DONE' 120 &&
		   grep -q 'VERIFY ok' "$d/a.out"; then
			pass "lock timeout: checkpoint refused ($CKPT_LINE), app kept running and finished"
		else
			fail "lock timeout: app did not survive the refused checkpoint"; tail -5 "$d/a.out"
		fi
	fi
else
	fail "lock: app did not start"; tail -5 "$d/a.out"
fi
kill -9 "$APP_PID" 2>/dev/null
stop_phosd; sleep 0.5
CKPT_TIMEOUT=300 start_phosd
fi

if want i; then
log "=== (i) concurrent save (issue [6]): leave-running, no snapshot; the app runs while phos-gpu copies"
stop_phosd; sleep 0.5
PHOS_GPU_NO_SNAPSHOT=1 start_phosd
# i_cow: the write sets libphos sees are complete: the copy is used as is


#        stop-the-world; both images restore exactly
for mode in cow ind; do
	d=$W/i_$mode; mkdir -p "$d"
	extra=(); [ $mode = ind ] && extra=(indirect)
	"${UNDER_LIBPHOS[@]}" "$BIN/app_state" 4 256 50 100 "${extra[@]}" >"$d/ref.out" 2>&1
	start_app "$d/a.out" "${UNDER_LIBPHOS[@]}" "$BIN/app_state" 4 256 50 100 "${extra[@]}"
	mark=$(wc -l <"$LOG_DIR/phosd.log")
	if ! { wait_for "$d/a.out" '^iter 10 ' 60 && ckpt "$APP_PID" --leave-running; }; then
		fail "i_$mode: leave-running checkpoint"; tail -5 "$d/a.out"; kill -9 "$APP_PID" 2>/dev/null
		continue
	fi
	new=$(tail -n +"$mark" "$LOG_DIR/phosd.log")
	grep -E 'GPU buffer|validation|changed before' <<<"$new" | tail -4 | sed 's/^/  /'
	if [ $mode = cow ] && grep -q 'while it ran .*every hash matched' <<<"$new" &&
	   ! grep -q 'failed validation' <<<"$new"; then
		pass "i_cow: the buffers were saved while the app ran, every hash matched ($CKPT_LINE)"
	elif [ $mode = ind ] && grep -q 'changed before it was saved' <<<"$new" &&
	     grep -q 'failed validation; checkpointing again' <<<"$new"; then
		pass "i_ind: the hidden write was caught and the checkpoint taken again, stop-the-world ($CKPT_LINE)"
	else
		fail "i_$mode: the phosd log does not show the expected save"
	fi
	wait_for "$d/a.out" '^DONE' 120
	if same_as_ref "i_${mode}_orig" "$d/a.out" "$d/ref.out"; then
		pass "i_$mode: the original ran on exactly"
	else
		fail "i_$mode: the original after the checkpoint"; tail -5 "$d/a.out"
	fi
	wait "$APP_PID" 2>/dev/null
	if restore "$IMG" "$d/b.out" && wait_for "$d/b.out" '^DONE' 120 &&
	   suffix_of_ref "i_${mode}_copy" "$d/b.out" "$d/ref.out"; then
		pass "i_$mode: its image restores exactly"
	else
		fail "i_$mode: restore of the image"; tail -20 "$d/b.out"
	fi
	rm -rf "$IMG"
done
# i_torch: PyTorch training checkpointed while it runs (no snapshot): the
# original's loss sequence and the image's are the uninterrupted run's; the
# step times around the checkpoint are reported
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
	d=$W/i_torch; mkdir -p "$d"
	"${UNDER_LIBPHOS[@]}" python3 "$here/train.py" 40 0.1 >"$d/ref.out" 2>&1
	start_app "$d/a.out" "${UNDER_LIBPHOS[@]}" python3 "$here/train.py" 40 0.1
	mark=$(wc -l <"$LOG_DIR/phosd.log")
	if wait_for "$d/a.out" '^step 10 ' 180 && ckpt "$APP_PID" --leave-running; then
		new=$(tail -n +"$mark" "$LOG_DIR/phosd.log")
		grep -o 'phos-gpu: saved.*' <<<"$new" | sed 's/^/  /'
		if grep -q 'while it ran .*every hash matched' <<<"$new"; then
			pass "i_torch: PyTorch's GPU buffers were saved while it trained ($CKPT_LINE)"
		else
			fail "i_torch: the phosd log does not show a concurrent save"
		fi
		wait_for "$d/a.out" '^DONE' 180
		if same_as_ref i_torch_orig "$d/a.out" "$d/ref.out"; then
			pass "i_torch: the original's loss sequence equals the uninterrupted run's"
		else
			fail "i_torch: the original after the checkpoint"
		fi
		# step times: before the checkpoint (2-9), the first 4 after it, the rest
		awk '$1 == "steptime" { t[$2] = $3 }
		     END { for (i = 2; i <= 9; i++) b = b " " t[i]; for (i = 11; i <= 14; i++) a = a " " t[i];
			   for (i = 15; i <= 40; i++) r = r " " t[i];
			   print "  step ms before the checkpoint:" b; print "  step ms of the 4 steps after it:" a;
			   print "  step ms later:" r }' "$d/a.out"
		wait "$APP_PID" 2>/dev/null
		if restore "$IMG" "$d/b.out" && wait_for "$d/b.out" '^DONE' 180 &&
		   suffix_of_ref i_torch_copy "$d/b.out" "$d/ref.out"; then
			pass "i_torch: its image restores with the uninterrupted run's losses"
		else
			fail "i_torch: restore of the image"; tail -20 "$d/b.out"
		fi
		rm -rf "$IMG"
	else
		fail "i_torch: leave-running checkpoint"; tail -5 "$d/a.out"; kill -9 "$APP_PID" 2>/dev/null
	fi
fi
stop_phosd; sleep 0.5
start_phosd
fi

if want j; then
log "=== (j) concurrent restore (issue [7]): the restored app runs while its buffers load"
stop_phosd; sleep 0.5
CONCURRENT_RESTORE=true start_phosd
mark=$(wc -l <"$LOG_DIR/phosd.log")
exact_stop j_cuda 60 "${UNDER_LIBPHOS[@]}" "$BIN/app_state" 6 256 40 100
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
	exact_stop j_torch 180 "${UNDER_LIBPHOS[@]}" python3 "$here/train.py" 40 0.1
fi
tail -n +"$mark" "$LOG_DIR/phosd.log" | grep -o 'phos-gpu: loaded.*' | sed 's/^/  /'
if tail -n +"$mark" "$LOG_DIR/phosd.log" | grep -q 'phos-gpu: loaded .* while the process ran'; then
	pass "j: the restores loaded the buffers while the processes ran"
else
	fail "j: no concurrent load in the phosd log"
fi
stop_phosd; sleep 0.5
start_phosd
fi

if want k; then
log "=== (k) a concurrent restore whose load fails: the app never runs on wrong data, the image is kept"
# From storage (no staging pool): phos-gpu reads each chunk and checks it
# against its name as it loads it, while the restored app may already run.
stop_phosd; sleep 0.5
CONCURRENT_RESTORE=true STAGE_POOL_GIB=0 STAGE_POOL_PINNED=false start_phosd
d=$W/k_fail
mkdir -p "$d"
"${UNDER_LIBPHOS[@]}" "$BIN/app_state" 6 256 40 100 >"$d/ref.out" 2>&1
start_app "$d/a.out" "${UNDER_LIBPHOS[@]}" "$BIN/app_state" 6 256 40 100
if ! grep -q '^DONE' "$d/ref.out"; then
	fail "k: uninterrupted run failed"; tail -5 "$d/ref.out"; kill -9 "$APP_PID" 2>/dev/null
elif ! wait_for "$d/a.out" '^(iter|step) 10 ' 60 || ! ckpt "$APP_PID"; then
	fail "k: app or its checkpoint"; tail -5 "$d/a.out"; kill -9 "$APP_PID" 2>/dev/null
else
	wait "$APP_PID" 2>/dev/null
	chunks=$(dirname "$IMG")/chunks
	# the last chunk of the last buffer, whichever order the load takes
	idx=$(ls "$IMG"/gpumem-*.idx | sort -V | tail -1)
	chunk=$(tail -1 "$idx")
	# k_try NAME: restore the image attached, output in $d/NAME.out; sets
	# K_RC; checks that every progress line the restored app printed (if
	# it got to run before the load failed) is the uninterrupted run's, and
	# that no app_state is left running
	k_try() {
		local wrong n
		timeout 300 env LD_LIBRARY_PATH="$PHOS_LIB" "$PHOS_BIN/phosctl" -q -s "$SOCK" restore "$IMG" \
			>"$d/$1.out" 2>&1
		K_RC=$?
		sleep 2
		n=$(lines "$d/$1.out" | wc -l)
		wrong=$(lines "$d/$1.out" | grep -vxF -f <(lines "$d/ref.out"))
		if [ -n "$wrong" ]; then
			fail "k: $1: the restored app printed a step the uninterrupted run did not"
			head -3 <<<"$wrong"
		elif pgrep -f "$BIN/app_state" >/dev/null; then
			fail "k: $1: an app_state is still running after the failed restore"
			pkill -9 -f "$BIN/app_state"
		else
			pass "k: $1: the restored app printed $n step(s) before the failure, each the uninterrupted run's, and is gone"
		fi
	}
	# 1. storage gone: the chunk store is not there
	mv "$chunks" "$chunks.gone"
	k_try gone
	if [ "$K_RC" != 0 ] && grep -q -E 'failed|missing|No such file' "$d/gone.out"; then
		pass "k: with its chunk store gone the restore fails and says why: $(grep -m1 -E 'failed|missing|No such file' "$d/gone.out")"
	else
		fail "k: the restore without the chunk store (rc $K_RC)"; tail -5 "$d/gone.out"
	fi
	mv "$chunks.gone" "$chunks"
	# 2. a corrupt chunk: one byte flipped, put back afterwards
	f=$chunks/$chunk
	[ -f "$f" ] || f=$f.zst	# compressed (COMPRESS_LEVEL)
	off=$(( $(stat -c %s "$f") / 2 ))
	old=$(od -An -tx1 -j "$off" -N 1 "$f" | tr -d ' ')
	printf '%b' "\\x$(printf '%02x' $((0x$old ^ 0xff)))" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
	k_try corrupt
	if [ "$K_RC" != 0 ] && grep -q -E "(corrupt|damaged)" "$d/corrupt.out"; then
		pass "k: with chunk ${chunk:0:16}... corrupt the restore fails and says so: $(grep -m1 -E 'corrupt|damaged' "$d/corrupt.out")"
	else
		fail "k: the restore with a corrupt chunk (rc $K_RC)"; tail -5 "$d/corrupt.out"
	fi
	printf '%b' "\\x$old" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
	# 3. the image was left as it was: restored again, it is exact
	if restore "$IMG" "$d/b.out" && wait_for "$d/b.out" '^DONE' 120 &&
	   cat "$d/a.out" "$d/b.out" >"$d/ab.out" && same_as_ref k_retry "$d/ab.out" "$d/ref.out"; then
		pass "k: restored again with the chunk store back and the byte put back, 40 steps equal the uninterrupted run"
	else
		fail "k: the retry after the failed restores"; tail -20 "$d/b.out"
	fi
	rm -rf "$IMG"
fi
stop_phosd; sleep 0.5
start_phosd
fi

if [ "${NO_BENCH:-0}" != 1 ]; then
	log "=== bench"
	PHOS_GPU_LIB_LOADED=1 BENCH_BIN=$BIN/app_bench . "$top/bench/bench.sh"
fi

if [ "${COUNTS:-1}" != 0 ]; then
	log "=== counts: libphos's launches and allocations vs CUPTI (tests/gpu/counts.sh)"
	if W=$W LOG_DIR=$LOG_DIR PHOS_BIN=$PHOS_BIN ARCH=$ARCH bash "$here/counts.sh"; then
		pass "counts: libphos's launch and allocation counts equal the ground truth ($LOG_DIR/counts.log)"
	else
		fail "counts: see $LOG_DIR/counts.log"
	fi
fi
if [ "${NO_BENCH:-0}" != 1 ]; then
	log "=== bench: libphos overhead per launch and per PyTorch step (bench/overhead.sh)"
	W=$W LOG_DIR=$LOG_DIR PHOS_BIN=$PHOS_BIN ARCH=$ARCH bash "$top/bench/overhead.sh" ||
		fail "overhead bench: a run crashed or did not build ($LOG_DIR/overhead.log)"
fi

grep -E 'CUDA state|GPU state|gpu|refused' "$LOG_DIR/phosd.log" | tail -40 >"$LOG_DIR/phosd-gpu-lines.log"
echo
echo "==== summary: $PASSES passed, $FAILS failed"
printf '%s' "$SUMMARY"
[ "$FAILS" = 0 ]
