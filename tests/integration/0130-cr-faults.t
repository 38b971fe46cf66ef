#!/bin/bash
# 0130-cr-faults.t: phosd under faults, with real CRIU and processes:
# - `phosctl status` shows a slow checkpoint in flight with its phase;
#   `phosctl cancel` answers for it (refused while CRIU dumps, refused
#   for another user's operation or an unknown one);
# - SIGKILL of phosd during a leave-running checkpoint: the process keeps
#   running, the previous generation stays intact and restorable, the
#   half-written one is never listed and is removed at the next start;
# - a full checkpoint_dir (small tmpfs) fails the checkpoint cleanly,
#   leaves no generation and the process running (leave-running and stop);
# - a restarted phosd lists the images written before.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
# shellcheck source=lib-phosd.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-phosd.sh"
phosd_require
require_built tests/progs/cr_append
command -v setpriv >/dev/null || skip_all "setpriv (util-linux) not installed"
id nobody >/dev/null 2>&1 || skip_all "no user nobody"
plan 34

phosd_scratch
phosd_start n1
phosd_start n2

MB=${PHOS_TEST_BIG_MB:-300}

# grows FILE: FILE gets new lines within 10 s.
grows() {
	local n
	n=$(wc -l <"$1")
	wait_lines "$1" $((n + 3)) 10
}

# -- a slow checkpoint: status and cancel ---------------------------------------
f=$PD/big.txt
setsid "$PROGS/cr_append" "$f" 50 "$MB" </dev/null >/dev/null 2>&1 &
bpid=$!
disown
track "$bpid"
wait_lines "$f" 2 60
task=$(image_dir root "$bpid")

# CRIU's process under phosd n1: stopping it holds the checkpoint in its
# dump phase for as long as the test needs, whatever the machine's speed.
_criu_of_n1() {
	CPID=$(pgrep -x criu -P "${PHOSD_PID[n1]}" | head -1)
	[ -n "$CPID" ]
}
# catch_criu: wait (30 s at most, polling fast) for it and stop it.
catch_criu() {
	local end=$((SECONDS + 30))
	until _criu_of_n1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.02
	done
	kill -STOP "$CPID"
}
_dumping() {
	ST=$(pc n1 status 2>&1)
	grep -qE "checkpoint +[0-9]+s +pid $bpid: dumping" <<<"$ST"
}

pc n1 checkpoint --leave-running --pid "$bpid" >"$PD/ck1.out" 2>&1 &
ck=$!
catch_criu
track "$CPID"
_dumping
ok $? "phosctl status shows the checkpoint of pid $bpid in flight, dumping" || diag "$ST"
opid=$(sed -n "s/^ *\\([0-9][0-9]*\\) *checkpoint .*pid $bpid:.*/\\1/p" <<<"$ST" | head -1)
RC=0
OUT=$(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
	"$PHOSCTL" -s "$PD/n1.sock" status 2>&1) || RC=$?
unlike "$OUT" "pid $bpid" "another user does not see it in phosctl status"
RC=0
OUT=$(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
	"$PHOSCTL" -s "$PD/n1.sock" cancel "$opid" 2>&1) || RC=$?
ok "$([ $RC = 1 ] && echo 0 || echo 1)" "another user cannot cancel it" || diag "$OUT"
like "$OUT" "no operation $opid of yours" "and is told there is no such operation of theirs"
pc_out n1 cancel "$opid"
kill -CONT "$CPID"
if [ "$RC" = 0 ]; then
	# a cancellable phase (between pre-dump rounds): the checkpoint stops
	wait "$ck"
	ckrc=$?
	is "$ckrc" 1 "cancelled: the checkpoint fails" || diag_file "$PD/ck1.out"
	skip "the dump was cancellable here" 2
else
	is "$RC" 1 "cancel while CRIU dumps is refused (exit 1)"
	like "$OUT" "past the point where it can stop safely" "with its reason"
	wait "$ck"
	ckrc=$?
	skip "the dump could not be cancelled" 1
fi
pc_out n1 cancel 987654
like "$OUT" "no operation 987654" "cancel of an unknown operation is refused with a message"
if [ "$ckrc" = 0 ]; then
	gen1=$(sed -n 's/.*written to \(\/[^ ]*\) (.*/\1/p' "$PD/ck1.out")
else
	pc_out n1 checkpoint --leave-running --pid "$bpid"
	gen1=$(sed -n 's/.*written to \(\/[^ ]*\) (.*/\1/p' <<<"$OUT")
fi
ok "$([ -n "$gen1" ] && [ -f "$gen1/manifest.mac" ] && echo 0 || echo 1)" \
	"a first generation is published ($gen1)" || diag_file "$PD/ck1.out"
pc_out n1 status
unlike "$OUT" "pid $bpid:" "status shows no operation once it is over"

# -- SIGKILL of phosd in the middle of a leave-running checkpoint ---------------------
pc n1 checkpoint --leave-running --pid "$bpid" >"$PD/ck2.out" 2>&1 &
ck=$!
_partial() { compgen -G "$task/.partial-*" >/dev/null; }
catch_criu
_partial
ok $? "the second checkpoint is being written (.partial-* under the task dir)"
n1pid=${PHOSD_PID[n1]}
kill -KILL "$n1pid"
kill -CONT "$CPID"
wait "$n1pid" 2>/dev/null
unset "PHOSD_PID[n1]"
wait "$ck"
ckrc=$?
ok "$([ $ckrc != 0 ] && echo 0 || echo 1)" "phosctl checkpoint fails when phosd is killed ($ckrc)"
like "$(cat "$PD/ck2.out")" "closed the connection|phosd" "and says phosd went away"
# CRIU's swrk loses its socket; its cleanup thaws the tree
wait_for 60 grows "$f"
ok $? "the process keeps running (its file grows again)"
st=$(sed -n 's/^State:\s*\(.\).*/\1/p' "/proc/$bpid/status")
ok "$(case $st in [RS]) echo 0 ;; *) echo 1 ;; esac)" "and is neither stopped nor traced (state $st)"
gens=$(find "$task" -mindepth 1 -maxdepth 1 -name '[0-9]*' | wc -l)
is "$gens" 1 "only generation 1 is published"
pc_out n2 list
like "$OUT" "pid-$bpid +0 +0 +1 +yes" "the other node lists generation 1 as valid"
unlike "$OUT" "partial" "and does not list the half-written one"
# wait for CRIU to be done with the staging dir before phosd cleans it
_criu_busy() {
	local p
	for p in $(pgrep -x criu); do
		find "/proc/$p/fd" -lname "$task/*" 2>/dev/null | grep -q . && return 0
	done
	return 1
}
wait_for 30 eval '! _criu_busy'
phosd_start n1
ok "$(_partial && echo 1 || echo 0)" "the restarted phosd removed the half-written generation" ||
	diag "$(ls -la "$task")"
like "$(cat "$PD/n1.log")" "removed 1 partial image" "and says so in its log"
pc_out n1 list
like "$OUT" "pid-$bpid +0 +0 +1 +yes" "the restarted phosd lists generation 1"

kill -KILL "$bpid"
pc_out n2 restore --detach "$gen1"
ok $RC "generation 1 is intact: n2 restores it (full verification)" || diag "$OUT"
rp=$(restored_pid "$OUT")
track "$rp"
wait_for 30 grows "$f"
ok $? "and the restored process writes again"
kill -KILL "$rp" 2>/dev/null

# -- full disk ------------------------------------------------------------------------
small=$PD/small
mkdir "$small"
if ! mount -t tmpfs -o size=20m,mode=0755 phos-test "$small"; then
	skip "cannot mount a tmpfs" 9
else
	phosd_start n3 "checkpoint_dir: $small/images"
	f=$PD/full.txt
	setsid "$PROGS/cr_append" "$f" 50 100 </dev/null >/dev/null 2>&1 &
	fpid=$!
	disown
	track "$fpid"
	wait_lines "$f" 2 60
	pc_out n3 checkpoint --leave-running --pid "$fpid"
	is "$RC" 1 "a leave-running checkpoint into a 20 MB checkpoint_dir fails (exit 1)" || diag "$OUT"
	# phosd's message is CRIU's last error (which varies with where the
	# write failed); the CRIU log it keeps says why
	crlog=$(sed -n 's/.*(CRIU log: \([^)]*\)).*/\1/p' <<<"$OUT" | head -1)
	ok "$({ echo "$OUT"; cat "$crlog"; } 2>/dev/null | grep -qE "[Nn]o space left|ENOSPC" &&
		echo 0 || echo 1)" "the message names the kept CRIU log, which says there is no space" ||
		{ diag "$OUT"; diag_file "$PD/n3.log" 10; }
	wait_for 30 grows "$f"
	ok $? "the process keeps running"
	pc_out n3 checkpoint --pid "$fpid"
	is "$RC" 1 "a stop-mode checkpoint fails too" || diag "$OUT"
	wait_for 30 grows "$f"
	ok $? "and the process is not killed: it goes on"
	left=$(find "$small/images" -mindepth 5 2>/dev/null)
	ok "$([ -z "$left" ] && echo 0 || echo 1)" "no generation and no partial directory is left" ||
		diag "$left"
	used=$(df -k --output=used "$small" | tail -1)
	ok "$([ "$used" -lt 1024 ] && echo 0 || echo 1)" "the space is given back (${used} KB used)"
	pc_out n3 list
	unlike "$OUT" "pid-$fpid" "phosctl list shows no image of it"
	pc_out n3 status
	unlike "$OUT" "pid $fpid:" "and no operation is left in flight"
	kill -KILL "$fpid"
	phosd_stop n3
	umount "$small"
fi

# -- restart: earlier images are still there -----------------------------------------
pc_out n1 list
before=$OUT
phosd_stop n1
phosd_start n1
pc_out n1 list
is "$OUT" "$before" "after a clean restart phosd lists the same images"

phosd_finish
done_testing
