# lib.sh - helpers of the GPU tests (sourced).  A private phosd in a scratch
# directory; apps run as setsid'ed process trees that phosd checkpoints.
#
# Environment:
#   PHOS_BIN   folder with phosd, phosctl, phos-restore, phos-gpu (default:
#              .carry/bin of the checkout, else ./build/daemon of run-tests.sh)
#   LIBPHOS    libphos.so (default: $PHOS_BIN's, else ./build/preload/.libs)
#   PHOS_LIB   LD_LIBRARY_PATH for them and for CRIU (default .carry/lib)
#   CRIU       criu binary (default $PHOS_BIN/criu, else criu on PATH)
#   LOG_DIR    where logs go (default $W/logs)
#   W          scratch folder (default /dev/shm/phos-gpu if it has room,
#              else /tmp/phos-gpu)
#   STAGE_POOL_GIB  phosd's gpu_stage_pool_gib (default 0: no staging
#              pool); start_phosd waits until the pool is filled
#   STAGE_POOL_PINNED  phosd's gpu_stage_pool_pinned (default false: the
#              pool pinned piece by piece during a checkpoint)
#   COMPRESS_LEVEL  phosd's gpu_compress_level (default 0)
#   RUN_TMPFS  1: where /run is not a tmpfs (a container), start_phosd
#              mounts one over it, with /run's files copied in, as a
#              systemd node has: criu then keeps its kernel probe in
#              /run/criu.kdat instead of probing again on every run (0.1-0.2 s
#              of each restore; phosd says so at start).  Left mounted.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${PHOS_BIN:-}" ]; then
	PHOS_BIN=$top/.carry/bin
	[ -x "$PHOS_BIN/phosd" ] || [ ! -x "$top/build/daemon/phosd" ] || PHOS_BIN=$top/build/daemon
fi
LIBPHOS=${LIBPHOS:-$PHOS_BIN/libphos.so}
[ -f "$LIBPHOS" ] || [ ! -f "$top/build/preload/.libs/libphos.so" ] || LIBPHOS=$top/build/preload/.libs/libphos.so
PHOS_LIB=${PHOS_LIB:-$top/.carry/lib}
CRIU=${CRIU:-$PHOS_BIN/criu}
[ -x "$CRIU" ] || CRIU=$(command -v criu)
if [ -z "${W:-}" ]; then
	shm_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
	if [ "${shm_kb:-0}" -gt $((80 * 1024 * 1024)) ]; then W=/dev/shm/phos-gpu; else W=/tmp/phos-gpu; fi
fi
LOG_DIR=${LOG_DIR:-$W/logs}
SOCK=$W/phosd.sock
PASSES=0
FAILS=0
SUMMARY=""

# reserve_hugepages WHO GIB: at least GIB GiB of 2 MiB pages
# (vm.nr_hugepages, for a staging pool) for this script's run, the old
# setting put back when it exits (an EXIT trap); 2 with a message when they
# cannot be had.
reserve_hugepages() {
	HP_OLD=$(cat /proc/sys/vm/nr_hugepages)
	trap 'echo "$HP_OLD" >/proc/sys/vm/nr_hugepages' EXIT
	if [ "$HP_OLD" -lt $(($2 * 512)) ] && ! echo $(($2 * 512)) >/proc/sys/vm/nr_hugepages; then
		echo "$1: cannot reserve $2 GiB of 2 MiB pages (vm.nr_hugepages): run as root" >&2
		return 2
	fi
}

log() { printf '%s %s\n' "$(date +%T)" "$*"; }
pass() { PASSES=$((PASSES + 1)); SUMMARY+="PASS $*"$'\n'; log "PASS $*"; }
fail() { FAILS=$((FAILS + 1)); SUMMARY+="FAIL $*"$'\n'; log "FAIL $*"; }
phos() { LD_LIBRARY_PATH=$PHOS_LIB "$@"; }
phosctl() { phos "$PHOS_BIN/phosctl" -q -s "$SOCK" "$@"; }

# run_tmpfs: /run a tmpfs, its files kept (RUN_TMPFS=1)
run_tmpfs() {
	local keep
	[ "$(stat -f -c %T /run)" = tmpfs ] && return 0
	keep=$(mktemp -d) && cp -a /run/. "$keep/" &&
		mount -t tmpfs -o size=256m,mode=0755 tmpfs /run && cp -a "$keep/." /run/ &&
		rm -f /run/criu.kdat /run/criu.kdat.tmp && rm -rf "$keep" &&
		log "/run: a tmpfs mounted over it (RUN_TMPFS=1), its files copied in"
}

start_phosd() {
	mkdir -p "$W" "$LOG_DIR"
	[ "${RUN_TMPFS:-0}" != 1 ] || run_tmpfs || log "RUN_TMPFS=1: cannot mount a tmpfs on /run"
	chmod 0755 "$W"
	rm -rf "$W/images" "$W/state"
	(umask 077 && head -c 32 /dev/urandom >"$W/phos.key")
	cat >"$W/phos.yaml" <<YAML
socket: $SOCK
state_dir: $W/state
checkpoint_dir: $W/images
key_file: $W/phos.key
criu_path: $CRIU
log_level: debug
log_target: stderr
keep_generations: 1
checkpoint_timeout: ${CKPT_TIMEOUT:-300}
gpu_concurrent_restore: ${CONCURRENT_RESTORE:-false}
gpu_stage_pool_gib: ${STAGE_POOL_GIB:-0}
gpu_stage_pool_pinned: ${STAGE_POOL_PINNED:-false}
gpu_compress_level: ${COMPRESS_LEVEL:-0}
gpu_rank_ms: ${RANK_MS:-0}
YAML
	PHOS_RESTORE_HELPER=$PHOS_BIN/phos-restore PHOS_GPU_HELPER=$PHOS_BIN/phos-gpu PHOS_DEBUG=1 \
		LD_LIBRARY_PATH=$PHOS_LIB setsid "$PHOS_BIN/phosd" -f -c "$W/phos.yaml" \
		</dev/null >>"$LOG_DIR/phosd.log" 2>&1 &
	PHOSD_PID=$!
	for _ in $(seq 50); do
		[ -S "$SOCK" ] && break
		kill -0 "$PHOSD_PID" 2>/dev/null || break
		sleep 0.2
	done
	if [ -S "$SOCK" ] && [ "${STAGE_POOL_GIB:-0}" != 0 ]; then
		wait_for "$LOG_DIR/phosd.log" 'staging pool: ([0-9]* GiB ready|cannot)' 600
		log "$(grep -o 'staging pool: .*' "$LOG_DIR/phosd.log" | tail -1)"
	fi
	[ -S "$SOCK" ] && return 0
	log "phosd did not start:"; tail -20 "$LOG_DIR/phosd.log"
	return 1
}

# "${UNDER_LIBPHOS[@]}" CMD...: CMD with libphos.so preloaded as the SPANK
# plugin sets it up (checkpointing on: large buffers served as exportable VMM)
UNDER_LIBPHOS=(env LD_PRELOAD="$LIBPHOS" PHOS_CHECKPOINT=1 PHOS_SOCKET="$SOCK")

stop_phosd() { [ -n "${PHOSD_PID:-}" ] && kill "$PHOSD_PID" 2>/dev/null; }

# wait_for FILE REGEX SECS: 0 once a line of FILE matches
wait_for() {
	local end=$((SECONDS + $3))
	while [ $SECONDS -lt $end ]; do
		grep -q -E "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# start_app OUT CMD...: run CMD as its own session, stdout+stderr to OUT;
# sets APP_PID
start_app() {
	local out=$1
	shift
	setsid "$@" </dev/null >"$out" 2>&1 &
	APP_PID=$!
}

# ckpt PID [phosctl options]: checkpoint; sets IMG and CKPT_LINE
ckpt() {
	local pid=$1
	shift
	CKPT_LINE=$(phosctl checkpoint --pid "$pid" "$@" 2>&1)
	local rc=$?
	log "checkpoint: $CKPT_LINE"
	IMG=$(sed -n 's/.* written to \([^ ]*\) .*/\1/p' <<<"$CKPT_LINE")
	[ $rc = 0 ] && [ -n "$IMG" ]
}

# restore IMG OUT: restore into a new process tree whose stdio is OUT;
# sets RESTORED_PID
restore() {
	local line rc
	phosctl restore "$1" >"$2" 2>&1 &
	RESTORE_JOB=$!
	if ! wait_for "$2" "^restored |failed|refused|error" 600; then
		return 1
	fi
	line=$(grep -m1 -E "^restored |failed|refused|error" "$2")
	log "restore: $line"
	RESTORED_PID=$(sed -n 's/^restored .* as pid \([0-9]*\).*/\1/p' <<<"$line")
	[ -n "$RESTORED_PID" ]
}

# lines OUT: the progress lines (iter/step) of an output
lines() { grep -E '^(iter|step) [0-9]+ ' "$1"; }

# same_as_ref NAME GOT REF: GOT's progress lines equal REF's
same_as_ref() {
	if diff <(lines "$2") <(lines "$3") >"$W/diff.$1" 2>&1 && [ -s "$3" ] && grep -q '^DONE' "$2"; then
		return 0
	fi
	log "$1: differs from the uninterrupted run:"; head -20 "$W/diff.$1"
	return 1
}

# suffix_of_ref NAME GOT REF: GOT's progress lines are REF's from GOT's
# first index to the end, and GOT ends with DONE
suffix_of_ref() {
	local first n
	first=$(lines "$2" | head -1 | awk '{print $2}')
	[ -n "$first" ] || { log "$1: no progress lines in $2"; tail -5 "$2"; return 1; }
	n=$(lines "$3" | awk -v f="$first" '$2 >= f' | wc -l)
	if diff <(lines "$2") <(lines "$3" | awk -v f="$first" '$2 >= f') >"$W/diff.$1" 2>&1 &&
	   grep -q '^DONE' "$2" && [ "$n" -gt 0 ]; then
		log "$1: lines from $first on ($n) equal the uninterrupted run's"
		return 0
	fi
	log "$1: differs from the uninterrupted run:"; head -20 "$W/diff.$1"
	return 1
}

# criu_gaps LOG [N]: where a CRIU log's time went (its lines begin with
# "(SS.UUUUUU)"): the span, and the N (6) longest waits between two lines,
# each with the line that began it (what CRIU was doing)
criu_gaps() {
	awk -v n="${2:-6}" '
		match($0, /^\([0-9]+\.[0-9]+\)/) {
			t = substr($0, 2, RLENGTH - 2) + 0
			if (k++) { gap[k] = t - last; what[k] = prev; at[k] = last }
			else first = t
			last = t
			prev = substr($0, RLENGTH + 1, 110)
		}
		END {
			if (k < 2) { print "  (no timestamped lines)"; exit }
			printf "  CRIU log: %d ms from its first line to its last; the longest waits:\n", (last - first) * 1000
			for (j = 0; j < n; j++) {
				b = 0
				for (i in gap) if (!b || gap[i] > gap[b]) b = i
				if (!b) break
				printf "  %6d ms after (at %.3f s)%s\n", gap[b] * 1000, at[b], what[b]
				delete gap[b]
			}
		}' "$1"
}

# read_ahead_mode MODE: a restore's read-ahead as the benches' MODE says
# (bench/restore_ab.sh, bench/criu_open_ab.sh): cold (the page cache
# dropped, the read-ahead as built), cold-nora (PHOS_NO_PREFETCH=1),
# cold-noheads (PHOS_PREFETCH_NO_HEADS=1), cold-readahead
# (PHOS_PREFETCH_READAHEAD=1) or warm (the cache kept).  Exports the three
# switches, sets DROP (1: drop the page cache before the restore); 1 for
# another MODE.  read_ahead_modes NAME MODE...: each known, or says which
# is not as NAME and returns 1.
read_ahead_mode() {
	PHOS_NO_PREFETCH=0 PHOS_PREFETCH_NO_HEADS=0 PHOS_PREFETCH_READAHEAD=0 DROP=1
	case $1 in
	cold) ;;
	cold-nora) PHOS_NO_PREFETCH=1 ;;
	cold-noheads) PHOS_PREFETCH_NO_HEADS=1 ;;
	cold-readahead) PHOS_PREFETCH_READAHEAD=1 ;;
	warm) DROP=0 ;;
	*) return 1 ;;
	esac
	export PHOS_NO_PREFETCH PHOS_PREFETCH_NO_HEADS PHOS_PREFETCH_READAHEAD
}
read_ahead_modes() {
	local name=$1 m
	shift
	for m in "$@"; do
		(read_ahead_mode "$m") || {
			echo "$name: a mode is cold, cold-nora, cold-noheads, cold-readahead or warm, not $m" >&2
			return 1
		}
	done
}

# criu_open_waits LOG: the ms a CRIU log's run waited after its "Opening
# ... vma" lines (CRIU opening a mapped file and reading its ELF headers),
# and the log's span
criu_open_waits() {
	awk 'match($0, /^\([0-9]+\.[0-9]+\)/) {
		t = substr($0, 2, RLENGTH - 2) + 0
		if (n++ && prev ~ /Opening 0x/) o += t - last
		if (n == 1) first = t
		last = t; prev = $0
	} END { printf "%d %d\n", o * 1000, (last - first) * 1000 }' "$1"
}

# gpu_pids: pids nvidia-smi sees on the GPU
gpu_pids() { nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | tr -d ' '; }
