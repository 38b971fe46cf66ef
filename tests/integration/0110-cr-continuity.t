#!/bin/bash
# 0110-cr-continuity.t: checkpoint on one phosd ("node n1"), restore with
# another ("node n2": own socket and state, same checkpoint_dir and key),
# and check that the restored processes go on exactly where they were:
# a C counter driven by its stdin (stop and leave-running checkpoints, and
# a chain checkpoint -> restore -> checkpoint -> restore), a process
# appending to a file it keeps open, a Python program with threads, and a
# parent and child talking over pipes.  Real CRIU, real processes, no Slurm.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
# shellcheck source=lib-phosd.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-phosd.sh"
phosd_require
require_built tests/progs/cr_tick tests/progs/cr_append tests/progs/cr_pair
plan 54

phosd_scratch
phosd_start n1
phosd_start n2

# ckpt_path TEXT: the generation directory in phosctl's checkpoint reply.
ckpt_path() {
	sed -n 's/.*written to \(\/[^ ]*\) (.*/\1/p' <<<"$1" | tail -1
}

# _no_workdir: no restore's work directory is left in the nodes' state_dir
# (a lazy restore's goes once its daemon has copied every page)
_no_workdir() {
	! ls -d "$PD"/n[123].state/restore.* >/dev/null 2>&1
}

# ckpt_restore NODE PROG FILE WHAT: PROG writes FILE (20 lines a second),
# is checkpointed (stop mode) on n1 once it has 20, and restored detached
# on NODE (2 tests; RPID: the restored pid, BEFORE: FILE's lines then).
ckpt_restore() {
	local node=$1 prog=$2 f=$3 what=$4 pid gen
	setsid "$PROGS/$prog" "$f" 20 </dev/null >/dev/null 2>&1 &
	pid=$!
	disown
	track "$pid"
	wait_lines "$f" 20
	pc_out n1 checkpoint --pid "$pid"
	ok $RC "checkpoint of $what (stop mode)" || diag "$OUT"
	gen=$(ckpt_path "$OUT")
	wait_for 10 _gone "$pid"
	BEFORE=$(wc -l <"$f")
	pc_out "$node" restore --detach "$gen"
	ok $RC "restore of $what --detach on $node" || diag "$OUT"
	RPID=$(restored_pid "$OUT")
	track "$RPID"
}

# append_roundtrip NODE FILE WHAT: a process appending numbers to FILE,
# which it keeps open, goes on after ckpt_restore with no gap and no
# repeat (4 tests).
append_roundtrip() {
	local f=$2 out
	ckpt_restore "$1" cr_append "$f" "$3"
	wait_lines "$f" $((BEFORE + 20))
	ok $? "$3: the restored process appends again (past $BEFORE lines)" ||
		diag "$(tail -5 "$PD/$1.log")"
	kill -STOP "$RPID" 2>/dev/null
	out=$(consecutive "$f")
	ok $? "$3: the file holds 0..$(($(wc -l <"$f") - 1)) with no gap and no repeat" ||
		diag "$out"
	kill -KILL "$RPID" 2>/dev/null
}

# cmd_of PID: the process's command line, spaces between arguments.
cmd_of() {
	tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
}

# tick W R: send one byte on fd W, print the number of the next "count N"
# line read on fd R (other lines: phosctl's reply, kept in the file $EXTRA:
# tick runs in a command substitution, whose variables do not come back).
EXTRA=$PD/extra
tick() {
	local line
	printf x >&"$1" || return 1
	while read -r -t 20 line <&"$2"; do
		case $line in
		count\ *) echo "${line#count }"; return 0 ;;
		*) printf '%s\n' "$line" >>"$EXTRA" ;;
		esac
	done
	return 1
}

# get_rpid R: the pid in phosctl's reply, read on fd R if not seen yet.
get_rpid() {
	local l
	while [ -z "$(restored_pid "$(cat "$EXTRA")")" ] && read -r -t 10 l <&"$1"; do
		printf '%s\n' "$l" >>"$EXTRA"
	done
	restored_pid "$(cat "$EXTRA")"
}

# A tick counter with its stdin and stdout on pipes to us: TW, TR, TPID.
start_tick() {
	coproc TICK { exec setsid "$PROGS/cr_tick" 2>/dev/null; }
	TPID=$TICK_PID
	disown "$TPID" 2>/dev/null
	exec {TW}>&"${TICK[1]}" {TR}<&"${TICK[0]}"
	track "$TPID"
}

# restore_tick NODE GEN: `phosctl restore GEN` on NODE with its stdin and
# stdout on pipes to us (the restored counter inherits them): RW, RR.
restore_tick() {
	coproc RESTORE { exec "$PHOSCTL" -s "$PD/$1.sock" restore "$2" 2>>"$PD/restore.err"; }
	disown "$RESTORE_PID" 2>/dev/null
	exec {RW}>&"${RESTORE[1]}" {RR}<&"${RESTORE[0]}"
}

# -- 1. C counter, stop mode, restored on the other node ------------------------
start_tick
for i in 0 1 2 3 4; do n=$(tick "$TW" "$TR"); done
is "$n" 4 "the counter counts 0..4 before the checkpoint"
pc_out n1 checkpoint --pid "$TPID"
ok $RC "phosctl checkpoint --pid (stop mode) on n1" || diag "$OUT"
gen=$(ckpt_path "$OUT")
ok "$([ -f "$gen/manifest.yaml" ] && echo 0 || echo 1)" "generation published at $gen"
wait_for 10 _gone "$TPID"
ok $? "stop mode: the checkpointed process is gone"
: >"$EXTRA"
restore_tick n2 "$gen"
n=$(tick "$RW" "$RR")
is "$n" 5 "restored by n2, the counter goes on with 5 (no gap, no repeat)"
n=$(tick "$RW" "$RR")
is "$n" 6 "and then 6"
rpid=$(get_rpid "$RR")
track "$rpid"
like "$(cmd_of "$rpid")" "cr_tick" "the pid phosctl reports ($rpid) is the restored counter" ||
	diag "phosctl said: $(cat "$EXTRA")" "$(cat "$PD/restore.err")"

# -- 2. chain: checkpoint the restored counter, restore it again on n1 ----------
pc_out n2 checkpoint --pid "$rpid"
ok $RC "chain: the restored counter (pid $rpid, in its own pid namespace) checkpoints on n2" ||
	{ diag "$OUT"; diag_file "$PD/n2.log" 15; }
gen2=$(ckpt_path "$OUT")
wait_for 10 _gone "$rpid"
ok $? "and is gone (stop mode)"
exec {RW}>&- {RR}<&-
: >"$EXTRA"
restore_tick n1 "$gen2"
n=$(tick "$RW" "$RR")
is "$n" 7 "restored again by n1, the counter goes on with 7"
rpid2=$(get_rpid "$RR")
track "$rpid2"
pc_out n1 checkpoint --leave-running --pid "$rpid2"
ok $RC "third link: leave-running checkpoint of the twice-restored counter" || diag "$OUT"
n=$(tick "$RW" "$RR")
is "$n" 8 "which keeps running and counts 8"
exec {RW}>&- {RR}<&-
kill -KILL "$rpid2" 2>/dev/null

# -- 3. leave-running: the original goes on, the copy resumes from the dump ------
start_tick
for i in 0 1 2; do n=$(tick "$TW" "$TR"); done
pc_out n1 checkpoint --leave-running --pid "$TPID"
ok $RC "leave-running checkpoint at count 2" || diag "$OUT"
gen=$(ckpt_path "$OUT")
n=$(tick "$TW" "$TR")
is "$n" 3 "the original keeps running: 3"
n=$(tick "$TW" "$TR")
is "$n" 4 "and 4"
kill -KILL "$TPID"
exec {TW}>&- {TR}<&-
: >"$EXTRA"
restore_tick n2 "$gen"
n=$(tick "$RW" "$RR")
is "$n" 3 "the copy restored by n2 resumes from the dump: 3"
exec {RW}>&- {RR}<&-

# -- 4. a file kept open and appended to -------------------------------------------
append_roundtrip n2 "$PD/append.txt" "the appending process"

# -- 5. Python threads ----------------------------------------------------------------
f=$PD/threads.txt
setsid python3 "$PROGS_SRC/cr_threads.py" "$f" 4 20 </dev/null >/dev/null 2>&1 &
ppid_=$!
disown
track "$ppid_"
wait_lines "$f" 60
ok $? "the Python program's 4 threads write"
pc_out n1 checkpoint --pid "$ppid_"
ok $RC "checkpoint of the Python program" || diag "$OUT"
gen=$(ckpt_path "$OUT")
wait_for 10 _gone "$ppid_"
before=$(wc -l <"$f")
pc_out n2 restore --detach "$gen"
ok $RC "restore on n2" || diag "$OUT"
rpid=$(restored_pid "$OUT")
track "$rpid"
wait_lines "$f" $((before + 60))
ok $? "the restored threads write again"
kill -STOP "$rpid" 2>/dev/null
bad=
for t in 0 1 2 3; do
	out=$(consecutive "$f" "T$t") || bad+="T$t: $out"$'\n'
	[ "$(grep -c "^T$t " "$f")" -gt $((before / 4 + 5)) ] || bad+="T$t did not go on after the restore"$'\n'
done
ok "$([ -z "$bad" ] && echo 0 || echo 1)" "each thread's counter goes on without gap or repeat" || diag "$bad"
kill -KILL "$rpid" 2>/dev/null

# -- 6. parent and child over pipes --------------------------------------------------
f=$PD/pair.txt
ckpt_restore n2 cr_pair "$f" "the parent and child"
rpid=$RPID before=$BEFORE
kids=$(cat "/proc/$rpid/task/$rpid/children" 2>/dev/null)
ok "$([ -n "$kids" ] && echo 0 || echo 1)" "the restored parent has its child back ($kids)"
like "$(cmd_of "${kids%% *}")" cr_pair "the child is cr_pair"
wait_lines "$f" $((before + 20))
ok $? "the conversation goes on after the restore"
read -ra kidv <<<"$kids"
kill -STOP "$rpid" "${kidv[@]}" 2>/dev/null
unlike "$(cat "$f")" ERROR "neither side saw a lost or repeated message"
out=$(awk '{ if ($2 != NR - 1 || $1 != (NR % 2 ? "C" : "P")) { print NR ": " $0; exit 1 } }' "$f")
ok $? "the log alternates C 0, P 1, C 2... to $(($(wc -l <"$f") - 1)) without a gap" || diag "$out"
kill -KILL "$rpid" "${kidv[@]}" 2>/dev/null

# -- 7. pre-dump rounds without soft-dirty ---------------------------------------------
f=$PD/predump.txt
setsid "$PROGS/cr_append" "$f" 20 </dev/null >/dev/null 2>&1 &
apid=$!
disown
track "$apid"
wait_lines "$f" 5
pc_out n1 checkpoint --pre-dump 2 --leave-running --pid "$apid"
ok $RC "checkpoint --pre-dump 2 works" || diag "$OUT"
if grep -q "soft-dirty" "$PD/n1.log"; then
	like "$OUT" "pre-dump unavailable.*one full dump" "without soft-dirty phosctl says it does one full dump"
else
	like "$OUT" "pre-dump 2/2" "phosctl reports the pre-dump rounds"
fi
kill -KILL "$apid"

# -- 8. lazy pages (PHOS_CRIU_LAZY_PAGES=1, an experiment) ---------------------------
# node n3's restores leave the memory to `criu lazy-pages`: the process runs
# before its pages are in, and each page it touches comes from the image
if "$CRIU" check --feature uffd-noncoop >/dev/null 2>&1; then
	PHOS_CRIU_LAZY_PAGES=1 phosd_start n3
	append_roundtrip n3 "$PD/lazy.txt" "the appending process, lazy pages"
	like "$(grep "restored .* as pid $RPID" "$PD/n3.log")" "served by criu lazy-pages" \
		"lazy pages: n3's log says the memory was served by criu lazy-pages"
	# a daemon that dies before every page is in takes the restored
	# process with it (the pages it never copied would read as zeros): a
	# process with 1 GiB it does not touch, its daemon killed at once
	f=$PD/lazybig.txt
	start_big "$f"
	bpid=$BIG_PID
	wait_lines "$f" 10
	pc_out n1 checkpoint --pid "$bpid"
	gen=$(ckpt_path "$OUT")
	wait_for 10 _gone "$bpid"
	pc_out n3 restore --detach "$gen"
	if pkill -KILL -f "criu lazy-pages --images-dir $gen"; then
		RPID=$(restored_pid "$OUT")
		track "$RPID"
		wait_for 10 _gone "$RPID"
		ok $? "lazy pages: its daemon killed before every page was in, the restored process is killed too" ||
			diag "$OUT" "$(tail -5 "$f")"
		# that restore's logs stay for the admin (and go before section 9)
		logs=$(ls "$PD"/n3.state/restore.*/lazy-pages.log 2>/dev/null | wc -l)
		is "$logs" 1 "lazy pages: the failed restore's logs stay in state_dir"
		rm -rf "$PD"/n3.state/restore.*
	else
		skip "the lazy-pages daemon had copied every page before it could be killed" 2
	fi
else
	skip "no userfaultfd for criu lazy-pages on this kernel" 7
fi

# -- 9. what a good restore leaves behind ------------------------------------------
# CRIU's work directory of each restore (log, stats, a core file of its kernel
# probes) goes once the restore is good
wait_for 10 _no_workdir
left=$(ls -d "$PD"/n[123].state/restore.* 2>/dev/null)
is "$left" "" "good restores leave no work directory in state_dir" || diag "$(ls -la $left)"
# what failed restores leave (CRIU's log) goes after 7 days, when phosd
# starts (and once an hour)
# (and in /tmp, where earlier versions left one after every restore)
old_tmp=/tmp/phos-restore.0110-$$
mkdir "$PD/n2.state/restore.old" "$PD/n2.state/restore.new" "$old_tmp"
echo "(00.1) Error" >"$PD/n2.state/restore.old/restore.log"
touch -d '8 days ago' "$PD/n2.state/restore.old" "$old_tmp"
phosd_stop n2
phosd_start n2
ok "$([ ! -e "$PD/n2.state/restore.old" ] && [ ! -e "$old_tmp" ] &&
	[ -d "$PD/n2.state/restore.new" ] && echo 0 || echo 1)" \
	"phosd removes failed restores' logs older than 7 days, and keeps newer ones" ||
	diag "$(ls -la "$PD/n2.state")" "$(ls -ld "$old_tmp" 2>&1)"
rm -rf "$old_tmp"

# -- 10. the file pages a process had in memory are read ahead at its restore ---
# (daemon/prefetch.c) cr_mapped reads the first 8 MiB of a 32 MiB file it
# maps and writes one byte at 24 MiB (its private copy of that page), then
# never touches it again: after a restore, what of the file is in the page
# cache was read ahead by phos-restore, not faulted in.
if command -v fincore >/dev/null; then
	data=$PD/mapped.bin
	dd if=/dev/urandom of="$data" bs=1M count=32 status=none
	setsid "$PROGS/cr_mapped" "$data" 8 24 </dev/null >/dev/null 2>&1 &
	mpid=$!
	disown
	track "$mpid"
	wait_for 10 test -e "$data.ready"
	pc_out n1 checkpoint --pid "$mpid"
	ok $RC "checkpoint of a process that maps a file" || diag "$OUT"
	gen=$(ckpt_path "$OUT")
	like "$(cat "$gen/prefetch.list" 2>&1)" "^0 8[0-9a-f]{5} $data\$" \
		"prefetch.list names the first 8 MiB of the file, the pages it had read"
	# CRIU writes the private copy back at the restore, and the kernel
	# reads the file's page to copy it first: the pages processes wrote
	# (of this file and others) lead the list, before the pages they read
	is "$(grep -m1 " $data\$" "$gen/prefetch.list" 2>&1)" "1800000 1000 $data" \
		"prefetch.list names the page the process wrote before those it read"
	wait_for 10 _gone "$mpid"
	cached() { fincore --bytes --noheadings --output RES "$data" | tr -d ' '; }
	sync "$data"
	dd if="$data" iflag=nocache count=0 status=none
	is "$(cached)" 0 "the file's pages are out of the page cache"
	pc_out n2 restore --detach "$gen"
	ok $RC "restore of the process on n2" || diag "$OUT"
	track "$(restored_pid "$OUT")"
	# the read-ahead reads (pread, not readahead(2), which is advice and
	# left out 72 KiB once in CI under memory pressure): every byte of the
	# range is in the page cache.  Without the read-ahead the restored
	# process reads none of the file.
	want=0
	while read -r _ len _; do want=$((want + 16#$len)); done < <(grep " $data\$" "$gen/prefetch.list")
	_read_ahead() { [ "$(cached)" -ge "$want" ]; }
	wait_for 10 _read_ahead
	ok $? "the restore read the ranges ahead ($want bytes; in the page cache: $(cached))"
	kill -KILL "$(restored_pid "$OUT")" 2>/dev/null
else
	skip "no fincore (util-linux)" 5
fi
# the files criu maps, which restores read ahead before the process's:
# phosd lists them when it starts (its executable with its size, then the
# libraries ld.so loaded for it)
crsize=$(printf '%x' "$(stat -L -c %s "$CRIU")")
like "$(head -1 "$PD/n2.state/criu.prefetch" 2>&1)" "^0 $crsize $(readlink -f "$CRIU")\$" \
	"phosd lists criu's executable for the restores' read-ahead" ||
	diag "$(cat "$PD/n2.state/criu.prefetch" 2>&1 | head -5)"
ok "$(grep -c '^0 [0-9a-f]* /.*\.so' "$PD/n2.state/criu.prefetch" | awk '{ print ($1 >= 1) ? 0 : 1 }')" \
	"and the libraries it loads ($(grep -c . "$PD/n2.state/criu.prefetch") files)"
# phosd's start: criu's feature check leaves no error of criu's in the log
# (the request kept open for its maps is closed by a last request), and
# phosd says when criu cannot cache its kernel probe (/run not a tmpfs)
start=$(sed -n '1,/ready on/p' "$PD/n2.log")
unlike "$start" 'Error \(criu/' "criu's feature check at phosd's start logs no error" ||
	diag "$start"
if [ "$(stat -f -c %T /run)" != tmpfs ] && [ ! -e /run/criu.kdat ]; then
	like "$start" "criu cannot cache what it probes of the kernel: /run is not a tmpfs" \
		"phosd says criu re-probes the kernel on each run (/run is not a tmpfs here)"
else
	unlike "$start" "criu cannot cache what it probes" \
		"phosd says nothing of criu's kernel cache (/run is a tmpfs here, or criu.kdat exists)"
fi

phosd_finish
done_testing
