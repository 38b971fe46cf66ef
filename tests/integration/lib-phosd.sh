# lib-phosd.sh - phosd instances for the checkpoint/restore integration
# tests (no Slurm).  Source lib.sh first.
#
#   phosd_require                 skip unless PHOS_INTEGRATION=1, root, CRIU
#   phosd_scratch                 make $PD (scratch dir: key, shared images)
#   phosd_start NAME ["KEY: VALUE"...]
#                                 start phosd "NAME" (a "node": own socket and
#                                 state_dir, shared checkpoint_dir and key);
#                                 the KEY: VALUE lines override the defaults
#   phosd_stop NAME [SIGNAL]      stop it (TERM by default) and wait
#   phosd_finish                  stop all; one test: no sanitizer report
#   pc NAME ARGS...               phosctl -s NAME's socket ARGS...
#   pc_out NAME ARGS...           the same, output in $OUT, status in $RC
#   track PID...                  kill these pids at exit
#   restored_pid TEXT             the pid in phosctl's "restored ... as pid N"
#   image_dir USER PID            task dir of a `checkpoint --pid PID` image
#   wait_lines FILE N [SECONDS]   wait until FILE has N lines
#   alive PID                     the process exists and is no zombie
#   consecutive FILE [PREFIX]     lines [PREFIX] 0, 1, 2... without gap/repeat
#   sign GEN_DIR                  re-sign a manifest with the test's key
#
# Everything lives in $PD, removed at exit unless a test failed or
# PHOS_TEST_KEEP=1.
#
# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154 # set here for the tests; lib.sh sets top_*

PHOSD=$top_builddir/daemon/phosd
PHOSCTL=$top_builddir/daemon/phosctl
PHOS_RESTORE=$top_builddir/daemon/phos-restore
PROGS=$top_builddir/tests/progs
PROGS_SRC=$top_srcdir/tests/progs
PD=
TRACKED=()
declare -A PHOSD_PID=()

phosd_require() {
	[ "${PHOS_INTEGRATION:-0}" = 1 ] || skip_all "set PHOS_INTEGRATION=1 to run integration tests"
	[ "$(id -u)" = 0 ] || skip_all "integration tests need root"
	require_built daemon/phosd daemon/phosctl daemon/phos-restore
	CRIU=${PHOS_CRIU:-/usr/local/sbin/criu}
	[ -x "$CRIU" ] || CRIU=$(command -v criu) || skip_all "criu not installed"
	"$CRIU" check >/dev/null 2>&1 || skip_all "criu check fails on this machine"
}

# A scratch dir: it must be traversable by other users (the user tests
# run programs from it), the image root below it stays root's.
phosd_scratch() {
	PD=$(mktemp -d "${PHOS_TEST_TMPDIR:-/tmp}/phos-it-$TEST_NAME.XXXXXX")
	chmod 0755 "$PD"
	(umask 077 && head -c 32 /dev/urandom >"$PD/key")
	mkdir -p "$PD/images"
	trap _phosd_exit EXIT
	trap 'exit 130' INT TERM
}

_phosd_exit() {
	local rc=$? n p
	for p in "${TRACKED[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
	done
	for n in "${!PHOSD_PID[@]}"; do
		phosd_stop "$n" KILL
	done
	[ -n "$PD" ] || return
	# a test may have mounted something (a small tmpfs) in the scratch dir
	grep -o " $PD/[^ ]*" /proc/mounts | while read -r m; do umount -l "$m" || true; done
	if [ "$rc" = 0 ] && [ "$T_FAIL" = 0 ] && [ "${PHOS_TEST_KEEP:-0}" != 1 ]; then
		rm -rf "$PD"
	else
		echo "# files kept in $PD" >&2
	fi
}

track() {
	TRACKED+=("$@")
}

# start_big FILE: a process holding 1 GiB of memory it never touches
# again (for a restore that takes long enough to act during), appending
# 0, 1, 2... to FILE every 50 ms; its pid in BIG_PID, tracked.
start_big() {
	setsid python3 -c '
import sys, time
big = bytearray(b"\x5a") * (1 << 30)
f = open(sys.argv[1], "a", buffering=1)
i = 0
while True:
    f.write(f"{i}\n"); i += 1; time.sleep(0.05)' "$1" </dev/null >/dev/null 2>&1 &
	BIG_PID=$!
	disown
	track "$BIG_PID"
}

_phosd_up() {
	kill -0 "$1" 2>/dev/null && [ -S "$2" ] && "$PHOSCTL" -s "$2" status >/dev/null 2>&1
}

phosd_start() {
	local n=$1 pid
	shift
	local -A y=(
		[socket]=$PD/$n.sock [state_dir]=$PD/$n.state [key_file]=$PD/key
		[checkpoint_dir]=$PD/images [log_target]=stderr [log_level]=debug
		[keep_generations]=10
	)
	local l k
	for l in "$@"; do y[${l%%:*}]=${l#*: }; done
	for k in "${!y[@]}"; do echo "$k: ${y[$k]}"; done >"$PD/$n.yaml"
	echo "---- start $(date +%T)" >>"$PD/$n.log"
	setsid env PHOS_RESTORE_HELPER="$PHOS_RESTORE" "$PHOSD" -f -c "$PD/$n.yaml" \
		</dev/null >>"$PD/$n.log" 2>&1 &
	pid=$!
	disown
	PHOSD_PID[$n]=$pid
	if ! wait_for 20 _phosd_up "$pid" "$PD/$n.sock"; then
		diag_file "$PD/$n.log"
		bail_out "phosd $n did not start"
	fi
}

phosd_stop() {
	local n=$1 sig=${2:-TERM} pid=${PHOSD_PID[$1]:-}
	[ -n "$pid" ] || return 0
	kill -"$sig" "$pid" 2>/dev/null || true
	wait_for 20 _gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "PHOSD_PID[$n]"
}

_gone() { ! alive "$1"; }

pc() {
	local n=$1
	shift
	timeout 120 "$PHOSCTL" -s "$PD/$n.sock" "$@"
}

# pc_out NAME ARGS...: stdout+stderr of phosctl in $OUT, its status in $RC.
pc_out() {
	RC=0
	OUT=$(pc "$@" 2>&1) || RC=$?
}

restored_pid() {
	sed -n 's/.*restored .* as pid \([0-9][0-9]*\).*/\1/p' <<<"$1" | tail -1
}

# image_dir USER PID: the task dir of a checkpoint taken with --pid PID.
image_dir() {
	echo "$PD/images/$1/pid-$2/0/0"
}

# wait_lines FILE N: wait (30 s at most) until FILE has N lines or more.
_has_lines() { [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; }
wait_lines() { wait_for "${3:-30}" _has_lines "$1" "$2"; }

# alive PID: the process exists and is not a zombie.
alive() {
	local st
	st=$(sed -n 's/^State:\s*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null)
	[ -n "$st" ] && [ "$st" != Z ]
}

# consecutive FILE [FIELD_PREFIX]: lines "PREFIX N" (or just "N") run 0..k
# without gap or repeat; prints the first offending line.
consecutive() {
	awk -v pre="${2:-}" '
		pre != "" && $1 != pre { next }
		{ v = (pre == "" ? $1 : $2); if (v != n) { print "line " NR ": " $0 " (want " n ")"; bad = 1; exit } n++ }
		END { exit bad }' "$1"
}

# sign DIR: recompute manifest.mac of generation DIR with the test key
# (what only root, holding the key, can do).
sign() {
	local hex
	hex=$(od -An -vtx1 "$PD/key" | tr -d ' \n')
	openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hex" -r "$1/manifest.yaml" |
		cut -d' ' -f1 >"$1/manifest.mac"
}

# phosd_finish: stop every phosd (TERM) and check, as one test, that
# their logs hold no sanitizer report (the build may use --enable-sanitizer).
phosd_finish() {
	local n bad
	for n in "${!PHOSD_PID[@]}"; do phosd_stop "$n"; done
	bad=$(grep -lE "AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:" \
		"$PD"/*.log 2>/dev/null)
	ok "$([ -z "$bad" ] && echo 0 || echo 1)" "the phosd logs hold no sanitizer report" ||
		for n in $bad; do diag_file "$n" 40; done
}
