#!/bin/bash
# counts.sh - the kernel launches and allocations libphos counts equal the
# ground truth, for
#   count_app     a CUDA C program with known counts (count_app.cu)
#   cublas        a cuBLAS SGEMM loop (app_gemm.cu)
#   cudnn         PyTorch conv2d forward/backward with cuDNN (count_torch.py conv)
#   torch-*       PyTorch training (count_torch.py train) under each allocator:
#                 default, expandable_segments:True, backend:cudaMallocAsync
#   triton        a Triton vector add launched K times (count_triton.py)
#
# Each program runs twice, the same way: under LD_PRELOAD=libphos.so with
# PHOS_STATS_FILE (libphos's counts), and under CUPTI (the truth):
# cupti_count.so, an injection library (CUDA_INJECTION64_PATH) that counts
# activity records.  Separate runs, so that neither tool sees the other.
#   truth launches = CONCURRENT_KERNEL records - INTERNAL_LAUNCH_API records
#                    (kernels the driver launched outside any API call are
#                    not launches an interposer can see; 0 in practice)
#   truth allocs   = MEMORY2 allocation records of device (sync and async)
#                    and pinned memory: one per allocation that succeeded,
#                    VMM ones included (CUPTI reports them at cuMemMap; a
#                    cuMemCreate that failed allocated nothing and has none)
#   (managed/static/array memory is left out: libphos does not track it.)
# Where the program knows its counts (count_app; triton's K launches, read
# in-process with phos_stats()), those are checked too, and they are the
# truth when CUPTI cannot be used.  The PyTorch runs also print the caching
# allocator's segment count next to libphos's allocations in the loop.
# No graphs or stream capture anywhere: CUPTI would count each kernel of a
# graph, libphos one cuGraphLaunch.
#
# Environment: PHOS_BIN, W, LOG_DIR (lib.sh); LIBPHOS (path of libphos.so;
# default PHOS_LIB if that names a file, else $PHOS_BIN/libphos.so, else
# the build tree's); ARCH (sm_90); PYTHON (python3); CUPTI_DIR (a folder
# with include/cupti.h and lib64/ or lib/ libcupti.so); RUN_TIMEOUT
# (seconds per program run, default 240); COMBINED=1 also runs every
# program under both at once (informational).
# Exit status 0 if nothing failed.  Skips (no PyTorch, Triton, cuDNN) are
# reported and do not fail.
set -u
here=$(cd "$(dirname "$0")" && pwd)
user_phos_lib=${PHOS_LIB:-}
# shellcheck source=tests/gpu/lib.sh
. "$here/lib.sh"
ARCH=${ARCH:-sm_90}
PYTHON=${PYTHON:-python3}
RUN_TIMEOUT=${RUN_TIMEOUT:-240}
COMBINED=${COMBINED:-0}
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null 2>&1 || NVCC=/usr/local/cuda/bin/nvcc
BIN=$W/bin
D=$W/counts
SKIPS=0
rm -rf "$D"
mkdir -p "$BIN" "$D" "$LOG_DIR"
exec > >(tee "$LOG_DIR/counts.log") 2>&1

skip() { SKIPS=$((SKIPS + 1)); SUMMARY+="SKIP $*"$'\n'; log "SKIP $*"; }
TABLE=$(printf '%-16s %12s %12s %10s %10s %-8s %s' program phos_launch truth_launch phos_alloc truth_alloc truth result)
row() { TABLE+=$'\n'"$(printf '%-16s %12s %12s %10s %10s %-8s %s' "$@")"; }
finish() {
	echo
	echo "==== counts: libphos vs ground truth (logs: $LOG_DIR, runs: $D)"
	echo "$TABLE"
	echo
	printf '%s' "$SUMMARY"
	echo "==== counts summary: $PASSES passed, $FAILS failed, $SKIPS skipped"
	[ "$FAILS" = 0 ]
	exit $?
}

# ---- libphos, GPU, CUPTI --------------------------------------------------

LIBPHOS=${LIBPHOS:-}
if [ -z "$LIBPHOS" ]; then
	for f in "$user_phos_lib" "$PHOS_BIN/libphos.so" "$top/preload/.libs/libphos.so"; do
		if [ -n "$f" ] && [ -f "$f" ]; then LIBPHOS=$f; break; fi
	done
fi
log "counts: libphos $LIBPHOS, scratch $D, ARCH $ARCH, run timeout ${RUN_TIMEOUT}s"
if [ -z "$LIBPHOS" ] || [ ! -f "$LIBPHOS" ]; then
	fail "counts: no libphos.so (set LIBPHOS or PHOS_BIN)"
	finish
fi
if ! timeout 60 nvidia-smi -L >"$D/gpus" 2>&1; then
	fail "counts: no GPU (nvidia-smi -L failed)"; cat "$D/gpus"
	finish
fi
head -2 "$D/gpus"

# find_cupti: sets CUPTI_INC and CUPTI_SO (a libcupti of the same root)
find_cupti() {
	local roots=() r l pyroot
	[ -n "${CUPTI_DIR:-}" ] && roots+=("$CUPTI_DIR")
	roots+=(/usr/local/cuda/extras/CUPTI /usr/local/cuda /usr/local/cuda/targets/x86_64-linux)
	pyroot=$(timeout 60 "$PYTHON" -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
	if [ -n "$pyroot" ] && [ -d "$pyroot" ]; then
		for r in "$pyroot"/cuda_cupti "$pyroot"/cu13 "$pyroot"/cu12; do roots+=("$r"); done
	fi
	for r in "${roots[@]}"; do
		[ -f "$r/include/cupti.h" ] || continue
		for l in "$r"/lib64/libcupti.so "$r"/lib/libcupti.so "$r"/lib64/libcupti.so.* "$r"/lib/libcupti.so.*; do
			if [ -f "$l" ]; then CUPTI_INC=$r/include; CUPTI_SO=$l; return 0; fi
		done
	done
	return 1
}

CUPTI_LIB=""
if find_cupti; then
	log "CUPTI headers $CUPTI_INC, library $CUPTI_SO"
	if gcc -std=gnu11 -O2 -Wall -Wextra -fPIC -shared -isystem "$CUPTI_INC" \
		-o "$BIN/cupti_count.so" "$here/cupti_count.c" "$CUPTI_SO" \
		-Wl,-rpath,"$(dirname "$CUPTI_SO")" -ldl -lpthread >"$D/cupti-build.log" 2>&1; then
		CUPTI_LIB=$BIN/cupti_count.so
	else
		log "cupti_count.so did not build:"; tail -20 "$D/cupti-build.log"
	fi
else
	log "no CUPTI (cupti.h + libcupti.so) found: CUPTI_DIR may name one"
fi
[ -n "$CUPTI_LIB" ] || log "no CUPTI ground truth: only the programs' own counts are checked"

# ---- running and reading ------------------------------------------------

# run_as HOW DIR CMD...: HOW = phos | cupti | both; output DIR/HOW.out,
# counter files DIR/HOW.phos.PID and DIR/HOW.cupti.PID
run_as() {
	local how=$1 dir=$2 rc
	shift 2
	local envs=(-u LD_PRELOAD -u CUDA_INJECTION64_PATH -u PHOS_STATS_FILE -u CUPTI_COUNT_FILE)
	case $how in
	phos) envs+=("LD_PRELOAD=$LIBPHOS" "PHOS_STATS_FILE=$dir/$how.phos.%p") ;;
	cupti) envs+=("CUDA_INJECTION64_PATH=$CUPTI_LIB" "CUPTI_COUNT_FILE=$dir/$how.cupti.%p") ;;
	both) envs+=("LD_PRELOAD=$LIBPHOS" "PHOS_STATS_FILE=$dir/$how.phos.%p"
		     "CUDA_INJECTION64_PATH=$CUPTI_LIB" "CUPTI_COUNT_FILE=$dir/$how.cupti.%p") ;;
	esac
	timeout -k 10 "$RUN_TIMEOUT" env "${envs[@]}" "$@" </dev/null >"$dir/$how.out" 2>&1
	rc=$?
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		log "  $how run timed out after ${RUN_TIMEOUT}s"
	elif [ $rc != 0 ]; then
		log "  $how run exited $rc"
	fi
	if [ $rc != 0 ] || ! grep -q '^DONE' "$dir/$how.out"; then
		tail -8 "$dir/$how.out" | sed 's/^/    | /'
		[ $rc = 0 ] && rc=1
	fi
	return $rc
}

# sumk KEY FILES...: sum of KEY's values over the files (empty if no file)
sumk() {
	local key=$1
	shift
	if [ $# = 0 ] || [ ! -f "$1" ]; then echo ""; return; fi
	awk -v k="$key" '$1 == k { s += $2 } END { print s + 0 }' "$@"
}
# info DIR/OUT KEY: the value of an "INFO KEY v" / "KNOWN KEY v" line
info() { awk -v k="$2" '($1 == "INFO" || $1 == "KNOWN") && $2 == k { v = $3 } END { print v }' "$1"; }

# truth_of PREFIX: sets T_OK T_LAUNCH T_ALLOC T_DETAIL from PREFIX.cupti.*
truth_of() {
	local files=("$1".cupti.*) k v
	T_OK=0 T_LAUNCH="" T_ALLOC="" T_DETAIL=""
	[ -f "${files[0]}" ] || { T_DETAIL="no CUPTI counts written"; return; }
	declare -A c
	for k in cupti_ok kernels internal_launches memsets memcpys mem_alloc_device \
		mem_alloc_device_async mem_alloc_pinned mem_alloc_other mem_release drv_launch \
		drv_graph_launch drv_alloc drv_mem_create drv_mem_create_failed drv_mem_map \
		mem_create_overlap mem_map_overlap dropped; do
		v=$(sumk "$k" "${files[@]}")
		c[$k]=${v:-0}
		T_DETAIL+="$k=${c[$k]} "
	done
	if [ "${c[cupti_ok]}" -lt 1 ]; then T_DETAIL="CUPTI did not initialise: $T_DETAIL"; return; fi
	if [ "${c[dropped]}" != 0 ]; then T_DETAIL="CUPTI dropped records: $T_DETAIL"; return; fi
	T_OK=1
	T_LAUNCH=$((c[kernels] - c[internal_launches]))
	# CUPTI's MEMORY2 allocation records, one per allocation that
	# succeeded, VMM ones included (reported at their cuMemMap).  On the
	# H100 (PyTorch expandable segments): 16 cuMemCreate records, 1 of them
	# failed, 15 cuMemMap; 19 device records = 4 cuMemAlloc + 15 VMM.
	T_ALLOC=$((c[mem_alloc_device] + c[mem_alloc_device_async] + c[mem_alloc_pinned]))
}

# phos_of PREFIX: sets P_OK P_LAUNCH P_ALLOC P_DETAIL from PREFIX.phos.*
phos_of() {
	local files=("$1".phos.*) k
	P_OK=0 P_LAUNCH="" P_ALLOC="" P_DETAIL=""
	[ -f "${files[0]}" ] || { P_DETAIL="libphos wrote no stats (not initialised?)"; return; }
	for k in initialized launches graph_launches launches_captured launches_unknown allocs \
		frees allocs_device allocs_host allocs_async allocs_create copies memsets maps slot_conflicts gpa_wrapped dlsym_wrapped; do
		P_DETAIL+="$k=$(sumk "$k" "${files[@]}") "
	done
	P_OK=1
	P_LAUNCH=$(sumk launches "${files[@]}")
	P_ALLOC=$(sumk allocs "${files[@]}")
}

# case_run NAME KNOWN_LAUNCHES KNOWN_ALLOCS CMD...: run, compare, add a row.
# KNOWN_*: the program's own counts, "-" for none, or "out" for the
# program's "KNOWN launches N" / "KNOWN allocs M" lines
case_run() {
	local name=$1 kl=$2 ka=$3 dir=$D/$1 src verdict="" why=()
	shift 3
	mkdir -p "$dir"
	log "=== $name: $*"
	if ! run_as phos "$dir" "$@"; then
		fail "$name: the run under libphos failed (see $dir/phos.out)"
		row "$name" - - - - - FAIL
		return
	fi
	phos_of "$dir/phos"
	log "  libphos: $P_DETAIL"
	[ "$kl" = out ] && kl=$(info "$dir/phos.out" launches) && kl=${kl:--}
	[ "$ka" = out ] && ka=$(info "$dir/phos.out" allocs) && ka=${ka:--}
	T_OK=0 T_DETAIL=""
	if [ -n "$CUPTI_LIB" ]; then
		run_as cupti "$dir" "$@" || log "  (the CUPTI run failed: no CUPTI truth for $name)"
		truth_of "$dir/cupti"
		log "  CUPTI:   $T_DETAIL"
	fi
	if [ "$COMBINED" = 1 ] && [ -n "$CUPTI_LIB" ]; then
		if run_as both "$dir" "$@"; then
			local pl=$P_LAUNCH pa=$P_ALLOC tok=$T_OK tl=$T_LAUNCH ta=$T_ALLOC td=$T_DETAIL pd=$P_DETAIL
			phos_of "$dir/both"; truth_of "$dir/both"
			log "  same process (informational): libphos launches $P_LAUNCH allocs $P_ALLOC, CUPTI launches ${T_LAUNCH:-?} allocs ${T_ALLOC:-?}"
			P_LAUNCH=$pl P_ALLOC=$pa T_OK=$tok T_LAUNCH=$tl T_ALLOC=$ta T_DETAIL=$td P_DETAIL=$pd
		fi
	fi
	if [ "$P_OK" != 1 ]; then
		fail "$name: $P_DETAIL"
		row "$name" - "${T_LAUNCH:--}" - "${T_ALLOC:--}" - FAIL
		return
	fi
	if [ "$T_OK" = 1 ]; then
		src=cupti
		[ "$P_LAUNCH" = "$T_LAUNCH" ] || why+=("launches $P_LAUNCH != CUPTI's $T_LAUNCH")
		[ "$P_ALLOC" = "$T_ALLOC" ] || why+=("allocations $P_ALLOC != CUPTI's $T_ALLOC")
		if [ "$kl" != - ] && [ "$T_LAUNCH" != "$kl" ]; then
			log "  note: CUPTI's launches $T_LAUNCH != the program's own $kl"
		fi
		if [ "$ka" != - ] && [ "$T_ALLOC" != "$ka" ]; then
			log "  note: CUPTI's allocations $T_ALLOC != the program's own $ka"
		fi
	elif [ "$kl" != - ]; then
		src=program
		T_LAUNCH=$kl T_ALLOC=$ka
	else
		skip "$name: no ground truth (CUPTI unusable: ${T_DETAIL:-not built}); libphos saw $P_LAUNCH launches, $P_ALLOC allocations"
		row "$name" "$P_LAUNCH" - "$P_ALLOC" - none SKIP
		return
	fi
	# the program's own counts hold whatever the truth source
	[ "$kl" = - ] || [ "$P_LAUNCH" = "$kl" ] || why+=("launches $P_LAUNCH != the program's $kl")
	[ "$ka" = - ] || [ "$P_ALLOC" = "$ka" ] || why+=("allocations $P_ALLOC != the program's $ka")
	if [ ${#why[@]} = 0 ]; then
		verdict=PASS
		pass "$name: libphos counted $P_LAUNCH launches and $P_ALLOC allocations, as $src did"
	else
		verdict=FAIL
		fail "$name: $(IFS=';'; echo "${why[*]}")"
	fi
	row "$name" "$P_LAUNCH" "$T_LAUNCH" "$P_ALLOC" "$T_ALLOC" "$src" "$verdict"
}

# torch_segments NAME: for the caching allocator, libphos's allocations in
# the training loop vs the allocator's new segments (informational when
# CUPTI agreed: cuBLAS/cuDNN handles may allocate outside the allocator)
torch_segments() {
	local out=$D/$1/phos.out seg pa
	seg=$(info "$out" segments_allocated_in_loop)
	pa=$(info "$out" phos_allocs_in_loop)
	[ -n "$seg" ] && [ -n "$pa" ] || return 0
	if [ "$seg" = "$pa" ]; then
		log "  $1: allocations in the loop: libphos $pa = caching allocator segments $seg"
	else
		log "  $1: allocations in the loop: libphos $pa, caching allocator segments $seg (the difference: allocations outside the allocator)"
	fi
}

# ---- the programs -------------------------------------------------------

build() {	# build NAME SRC [nvcc args]
	timeout 600 "$NVCC" -O2 -arch="$ARCH" -o "$BIN/$1" "$2" "${@:3}" >"$D/build-$1.log" 2>&1 && return 0
	log "nvcc $1 failed:"; tail -20 "$D/build-$1.log"
	return 1
}

if build count_app "$here/count_app.cu"; then
	case_run count_app out out "$BIN/count_app" 100
else
	fail "count_app: nvcc failed"; row count_app - - - - - FAIL
fi

if build count_gemm "$here/app_gemm.cu" -lcublas -Xlinker -rpath -Xlinker /usr/local/cuda/lib64; then
	case_run cublas - - env CUBLAS_WORKSPACE_CONFIG=:4096:8 "$BIN/count_gemm" 512 20 0
else
	fail "cublas: nvcc failed (cuBLAS missing?)"; row cublas - - - - - FAIL
fi

if timeout 180 "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >"$D/torch-check.log" 2>&1; then
	if timeout 180 "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.backends.cudnn.is_available() else 1)' >/dev/null 2>&1; then
		case_run cudnn - - "$PYTHON" "$here/count_torch.py" conv 5
	else
		skip "cudnn: no cuDNN in this PyTorch"; row cudnn - - - - none SKIP
	fi
	case_run torch-default - - env -u PYTORCH_CUDA_ALLOC_CONF "$PYTHON" "$here/count_torch.py" train 10
	torch_segments torch-default
	case_run torch-expandable - - env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "$PYTHON" "$here/count_torch.py" train 10
	torch_segments torch-expandable
	case_run torch-mallocasync - - env PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync "$PYTHON" "$here/count_torch.py" train 10
	if timeout 180 "$PYTHON" -c 'import triton' >/dev/null 2>&1; then
		K=200
		case_run triton - - "$PYTHON" "$here/count_triton.py" "$K"
		# in-process: exactly K launches and no allocation between two phos_stats() reads
		out=$D/triton/phos.out
		if [ -f "$out" ] && grep -q '^DONE' "$out"; then
			il=$(info "$out" phos_launches_in_loop)
			ia=$(info "$out" phos_allocs_in_loop)
			if [ "$il" = "$K" ] && [ "$ia" = 0 ]; then
				pass "triton-loop: libphos saw exactly $K launches and no allocation in the loop of $K launches"
				row triton-loop "$il" "$K" "$ia" 0 program PASS
			else
				fail "triton-loop: libphos saw ${il:-?} launches and ${ia:-?} allocations in the loop of $K launches (want $K, 0)"
				row triton-loop "${il:--}" "$K" "${ia:--}" 0 program FAIL
			fi
		fi
	else
		skip "triton: Triton not importable"; row triton - - - - none SKIP
	fi
else
	log "PyTorch with CUDA not usable:"; tail -3 "$D/torch-check.log"
	for n in cudnn torch-default torch-expandable torch-mallocasync triton; do
		skip "$n: no PyTorch with CUDA"; row "$n" - - - - none SKIP
	done
fi

finish
