#!/bin/bash
# shellcheck disable=SC2016 # python source is shown literally
# 0200-libphos-sigterm.t: libphos's SIGTERM path (preload/ctl.c) against a
# tiny fake phosd (a Python unix socket server), no Slurm, no CRIU:
#   - with PHOS_CHECKPOINT=1 a SIGTERM sends CHECKPOINT {FLAGS=PREEMPT} to
#     $PHOS_SOCKET and hangs up at once (no reply read);
#   - phosd's answer SIGRTMIN+4: PROCEED runs the app's SIGTERM disposition
#     (SIG_DFL: it dies of SIGTERM), RESTORED lets it carry on, HOLD keeps
#     every thread out of the app even after a SIGCONT;
#   - phosd unreachable: the app gets its SIGTERM at once; no answer within
#     PHOS_PREEMPT_TIMEOUT: the same;
#   - a forked child (no libphos thread) asks too, from its signal handler;
#   - a stray RT signal does not kill; without PHOS_CHECKPOINT nothing changes.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_built preload/.libs/libphos.so tests/progs/phos-counter
[ -x /usr/bin/python3 ] || skip_all "/usr/bin/python3 not installed"
plan 18

libphos=$top_builddir/preload/.libs/libphos.so
counter=$top_builddir/tests/progs/phos-counter
T=$(mktemp -d "${PHOS_TEST_TMPDIR:-/tmp}/phos-0200.XXXXXX")
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		{ kill -KILL "$p" && wait "$p"; } 2>/dev/null || true
	done
	[ "$T_FAIL" = 0 ] && rm -rf "$T"
}
trap cleanup EXIT

cat >"$T/fake.py" <<'PY'
import ctypes, os, signal, socket, struct, sys, time
path, mode, rec = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(5)
open(rec + ".ready", "w").close()
c, _ = s.accept()
pid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
c.settimeout(5)
data = b""
try:
    while True:
        b = c.recv(4096)
        if not b:
            break
        data += b
    eof = "eof"
except socket.timeout:
    eof = "open"
with open(rec, "w") as f:
    f.write("%d %s %s\n" % (pid, eof, data.hex()))
if mode == "none":
    sys.exit(0)
if mode == "hold":
    while not os.path.exists(rec + ".go"):
        time.sleep(0.05)
class sigval(ctypes.Union):
    _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]
val = {"proceed": 1, "restored": 2, "hold": 3}[mode]
ctypes.CDLL(None).sigqueue(pid, signal.SIGRTMIN + 4, sigval(sival_int=val))
PY

# fake MODE NAME: start a fake phosd on $T/NAME.sock; records in $T/NAME.rec
fake() {
	rm -f "$T/$2.sock" "$T/$2.rec" "$T/$2.rec.ready"
	/usr/bin/python3 "$T/fake.py" "$T/$2.sock" "$1" "$T/$2.rec" &
	PIDS+=($!)
	wait_for 10 test -e "$T/$2.rec.ready"
}

# start NAME SOCK [ARGS...]: the counter with libphos; its pid in $P
start() {
	local name=$1 sock=$2
	shift 2
	env LD_PRELOAD="$libphos" PHOS_CHECKPOINT=1 PHOS_SOCKET="$sock" "$counter" "$@" \
		>"$T/$name.out" 2>&1 &
	P=$!
	PIDS+=("$P")
	wait_for 10 grep -q '^count 3$' "$T/$name.out"
}

# finish PID: its exit status (bounded wait)
finish() {
	local i
	for ((i = 0; i < 150; i++)); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	wait "$1" 2>/dev/null
}

lines() { grep -c '^count' "$1"; }

# 1. PROCEED
fake proceed p
start p "$T/p.sock" 200 50
kill -TERM "$P"
rc=0; finish "$P" || rc=$?
is "$rc" 143 "PROCEED: the app dies of its SIGTERM (SIG_DFL)"
read -r rpid eof hex <"$T/p.rec"
is "$rpid" "$P" "phosd saw the task's own pid (SO_PEERCRED)"
is "$eof" eof "libphos hung up without waiting for a reply"
# header: magic PHOS, version 1, type 14 (CHECKPOINT); attribute FLAGS (10) = PREEMPT (2)
like "$hex" '^50484f5301000e00' "the request is a CHECKPOINT"
like "$hex" '0a00000008000000020{15}' "with FLAGS = PREEMPT"

# 2. RESTORED
fake restored r
start r "$T/r.sock" 60 50
kill -TERM "$P"
rc=0; finish "$P" || rc=$?
is "$rc" 0 "RESTORED: the app carries on and ends normally"
like "$(cat "$T/r.out")" '^done 60$' "and counts to the end"

# 3. HOLD: no more app code, even after SIGCONT
fake hold h
start h "$T/h.sock" 1000 50
kill -TERM "$P"
wait_for 10 test -s "$T/h.rec"
kill -STOP "$P"
touch "$T/h.rec.go"
sleep 0.5
kill -CONT "$P"
sleep 0.3
n1=$(lines "$T/h.out")
sleep 1
n2=$(lines "$T/h.out")
is "$n2" "$n1" "HOLD: after SIGCONT the app does not run on"
ok "$(kill -0 "$P" 2>/dev/null && echo 0 || echo 1)" "and the process waits for its SIGKILL"
{ kill -KILL "$P" && wait "$P"; } 2>/dev/null || true

# 4. phosd unreachable
start u "$T/nobody.sock" 1000 50
kill -TERM "$P"
rc=0; finish "$P" || rc=$?
is "$rc" 143 "no phosd: the app gets its SIGTERM at once"

# 5. no answer in PHOS_PREEMPT_TIMEOUT
fake none n
PHOS_PREEMPT_TIMEOUT=1 start n "$T/n.sock" 1000 50
kill -TERM "$P"
sleep 0.5
ok "$(kill -0 "$P" 2>/dev/null && echo 0 || echo 1)" "no answer yet: the app still runs"
rc=0; finish "$P" || rc=$?
is "$rc" 143 "no answer within PHOS_PREEMPT_TIMEOUT: the app gets its SIGTERM"

# 6. a forked child (no libphos thread) asks phosd from its handler
fake restored fr
start fr "$T/fr.sock" --fork 60 50
child=$(pgrep -P "$P" | head -1)
kill -TERM "$child"
rc=0; finish "$P" || rc=$?
is "$rc" 0 "forked child, RESTORED: it carries on, the task ends normally"
read -r rpid _ <"$T/fr.rec"
is "$rpid" "$child" "the request came from the child itself"
fake proceed fp
start fp "$T/fp.sock" --fork 1000 50
child=$(pgrep -P "$P" | head -1)
kill -TERM "$child"
rc=0; finish "$P" || rc=$?
like "$(cat "$T/fp.out")" 'child died of signal 15' "forked child, PROCEED: it dies of its SIGTERM"

# 7. a stray RT signal (a restore wakes every libphos process) is ignored
start s "$T/nobody.sock" 40 50
/usr/bin/python3 -c 'import ctypes, signal, sys
class V(ctypes.Union): _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
ctypes.CDLL(None).sigqueue(int(sys.argv[1]), signal.SIGRTMIN + 4, V(i=2))' "$P"
rc=0; finish "$P" || rc=$?
is "$rc" 0 "a stray SIGRTMIN+4 does not kill a libphos process"

# 8. without PHOS_CHECKPOINT=1 SIGTERM goes straight to the app
fake proceed x
env LD_PRELOAD="$libphos" PHOS_SOCKET="$T/x.sock" "$counter" 1000 50 >"$T/x.out" 2>&1 &
P=$!
PIDS+=("$P")
wait_for 10 grep -q '^count 3$' "$T/x.out"
kill -TERM "$P"
rc=0; finish "$P" || rc=$?
is "$rc" 143 "without PHOS_CHECKPOINT the app dies of SIGTERM at once"
ok "$([ ! -e "$T/x.rec" ] && echo 0 || echo 1)" "and phosd heard nothing"

done_testing
