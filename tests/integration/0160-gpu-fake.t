#!/bin/bash
# 0160-gpu-fake.t: the whole GPU fast path (doc/protocol.md, "GPU memory")
# end to end on the fake driver (tests/fakecuda: device memory is host
# memory, VMM handles are memfds, the checkpoint API's state lives in the
# process like the real driver's): a driver-API program under libphos.so,
# a real phosd, phos-gpu and CRIU.
# - leave-running: libphos hands its 3 large buffers to phosd, phos-gpu
#   saves them (snapshot first, then with no room for one, direct), the
#   program gets them back at the same addresses and goes on with every
#   word intact;
# - a second checkpoint of the same process hands over imported buffers;
# - stop mode, then restore: phos-gpu loads the buffers, phosd offers them
#   to the restored process, which goes on from where it stopped with every
#   word of every buffer as it was.
# The same on a real GPU: tests/gpu/run-all.sh f-h (the concurrent restore:
# j; a concurrent restore whose load fails: k).
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
# shellcheck source=lib-phosd.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-phosd.sh"
phosd_require
require_built tests/progs/fake_gpu_app
FAKE=$top_builddir/tests/fakecuda/.libs
LIBPHOS=$top_builddir/preload/.libs/libphos.so
[ -e "$FAKE/libcuda.so.1" ] && [ -e "$LIBPHOS" ] || skip_all "the fake driver or libphos.so is not built"
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
	: # the fake comes first in LD_LIBRARY_PATH, the real one is not used
fi
plan 137

phosd_scratch
# phosd, phos-gpu and phos-restore use the fake driver and keep the fake's
# checkpoint state in the processes themselves
export LD_LIBRARY_PATH=$FAKE FAKECUDA_CKPT_REMOTE=1
# 1 MiB chunks: each 4 MiB buffer is copied in 4 pieces by 4 workers
export PHOS_GPU_IO_CHUNK_MB=1 PHOS_GPU_IO_THREADS=4
export PHOS_GPU_HELPER=$top_builddir/daemon/phos-gpu
# a slowish copy (0.3 s a chunk): the program runs while its snapshot is
# saved, long enough to touch every buffer
FAKECUDA_DTOH_DELAY_MS=300 phosd_start n1
S=$PD/n1.sock
f=$PD/app.out
MIB=4 NBUF=3

last_iter() { sed -n "s/^iter //p" "$f" 2>/dev/null | tail -1; }
iter_past() { [ "$(last_iter)" -ge "$1" ] 2>/dev/null; }
no_corrupt() { ! grep -q CORRUPT "$f"; }
log_since() { tail -n +"$1" "$PD/n1.log"; }

# restored_exact GEN OUT WHAT: restore GEN detached; ok WHAT once the
# restored program wrote 3 more lines to OUT and none says CORRUPT; then
# it is killed
restored_exact() {
	local n
	n=$(wc -l <"$2")
	pc_out n1 restore --detach "$1"
	track "$(restored_pid "$OUT")"
	wait_for 30 _has_lines "$2" $((n + 3))
	ok "$( (_has_lines "$2" $((n + 3)) && ! grep -q CORRUPT "$2") && echo 0 || echo 1)" "$3" ||
		{ diag "$OUT"; diag_file "$2" 3; }
	kill -KILL "$(restored_pid "$OUT")" 2>/dev/null
}
# restored_order GEN OUT ORDER WHAT: restore GEN attached (phos-restore's
# lines, phos-gpu's among them, come to phosctl); ok once the program wrote
# 3 more lines to OUT and none says CORRUPT; like WHAT: phos-gpu's load
# order line is ORDER (a regex: its how, then the buffers); then it is killed
restored_order() {
	local n rjob rp
	n=$(wc -l <"$2")
	pc n1 restore "$1" >"$PD/attached.out" 2>&1 &
	rjob=$!
	wait_for 30 _has_lines "$2" $((n + 3))
	ok "$( (_has_lines "$2" $((n + 3)) && ! grep -q CORRUPT "$2") && echo 0 || echo 1)" \
		"it restores, every word as it was" || diag_file "$2" 3
	like "$(cat "$PD/attached.out")" "phos-gpu: load order $3\$" "$4"
	rp=$(restored_pid "$(cat "$PD/attached.out")")
	track "$rp"
	kill -KILL "$rp" 2>/dev/null
	wait "$rjob"
}
# none_ran WHEN: after a restore that failed, $f has its $n lines and the
# programs running are $before: no restored copy runs or wrote anything
none_ran() {
	ok "$( [ "$(wc -l <"$f")" = "$n" ] && [ "$(pgrep -d' ' -f fake_gpu_app)" = "$before" ] && echo 0 || echo 1)" \
		"no restored program runs, and it wrote nothing ($1)" || diag "$(pgrep -af fake_gpu_app)"
}
# start_app OUT [indirect]: fake_gpu_app under libphos, as a job's task; $APP
# (APP_DEBUG=1: with PHOS_DEBUG, libphos's lines in app.err)
start_app() {
	setsid env LD_PRELOAD="$LIBPHOS" PHOS_CHECKPOINT=1 PHOS_SOCKET="$S" ${APP_DEBUG:+PHOS_DEBUG=1} \
		"$PROGS/fake_gpu_app" "$1" "$NBUF" "$MIB" "${@:2}" </dev/null >>"$PD/app.err" 2>&1 \
		3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &	# no test harness file in its image
	APP=$!
	disown
	track "$APP"
}
# stop_app OUT [PROG]: start_app, and once it wrote 3 lines a stop
# checkpoint of it (SPID; RC, OUT; its log lines: log_since "$mark")
stop_app() {
	start_app "$@"
	SPID=$APP
	wait_for 30 _has_lines "$1" 3
	mark=$(($(wc -l <"$PD/n1.log") + 1))
	pc_out n1 checkpoint --pid "$SPID"
}

APP_DEBUG=1 start_app "$f"
apid=$APP
wait_for 30 iter_past 5
ok $? "the program runs under libphos on the fake driver (iter $(last_iter))" ||
	diag_file "$PD/app.err"

# -- leave-running, snapshot ----------------------------------------------------------
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 checkpoint --leave-running --pid "$apid"
ok $RC "a leave-running checkpoint succeeds" || { diag "$OUT"; diag_file "$PD/n1.log" 30; }
like "$(log_since "$mark")" "pid $apid: $NBUF GPU buffer\\(s\\), $((NBUF * MIB << 20)) bytes detached" \
	"phosd took its $NBUF large buffers (not the 64 KiB one)"
like "$(log_since "$mark")" "snapshot" "phos-gpu copied them on the device first (room for a snapshot)"
gen=$(image_dir root "$apid")/000001
is "$(wc -l <"$gen/gpumem-$apid.map" 2>/dev/null)" "$NBUF" "the image maps $NBUF buffers (gpumem-$apid.map)"
is "$(awk 'NF >= 7 { print $7 }' "$gen/gpumem-$apid.map" | sort -n | tr '\n' ' ')" "$(seq -s ' ' 1 "$NBUF") " \
	"it ranks them by the order the program touched them in while the snapshot was saved" ||
	diag_file "$gen/gpumem-$apid.map" 5
is "$(awk '$8 == "k1"' "$gen/gpumem-$apid.map" | wc -l)" "$NBUF" \
	"and each line's sums are keyed (k1): weights from the node key" ||
	diag_file "$gen/gpumem-$apid.map" 5
hdrs=$(head -qn1 "$gen"/gpumem-"$apid"-*.idx 2>/dev/null | sort -u)
is "$hdrs" "phos-chunks 1 $((MIB << 20)) 1048576" \
	"each saved as its $MIB MiB in 1 MiB chunks, named by an index in the image"
n=$(last_iter)
wait_for 30 iter_past $((n + 5))
ok $? "the program goes on after the checkpoint (iter $(last_iter))"
ok "$(no_corrupt && echo 0 || echo 1)" "with every word of its buffers intact" || diag_file "$f" 3

# -- leave-running again: imported buffers, no room for a snapshot: concurrent ---------
# (a slow copy, 1 s a chunk: 4 workers copy a buffer a second, so that the
# program, which writes its last buffer first, asks for it well before
# phos-gpu would get to it)
# (PHOS_GPU_NO_RANKS=1: the copy goes by index, not by the order the program
# touched its buffers after the first checkpoint, which it would follow)
phosd_stop n1
PHOS_GPU_NO_RANKS=1 FAKECUDA_FREE_MB=1 FAKECUDA_DTOH_DELAY_MS=1000 phosd_start n1
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 checkpoint --leave-running --pid "$apid"
ok $RC "a second leave-running checkpoint of the same process succeeds" ||
	{ diag "$OUT"; diag_file "$PD/n1.log" 30; }
like "$(log_since "$mark")" "saved in .* ms, while it ran .*hashed on the GPU" \
	"without room for a snapshot phos-gpu hashes the buffers and saves them while the program runs"
like "$(log_since "$mark")" "; [1-9][0-9]* copied first because the process was about to write them; every hash matched" \
	"buffers the program was about to write were saved first, and every saved buffer matched its hash"
# the map records the order the program touched its buffers in while the
# save ran (it writes them all each iteration): ranks 1..NBUF, by address
gen2=$(ls -d "$(image_dir root "$apid")"/0* | tail -1)
ranks() { awk 'NF >= 7 { print $1, $7 }' "$1/gpumem-$apid.map" | sort; }
is "$(ranks "$gen2" | awk '{ print $2 }' | sort -n | tr '\n' ' ')" "$(seq -s ' ' 1 "$NBUF") " \
	"the map ranks the buffers in the order the program first touched them while they were saved" ||
	diag_file "$gen2/gpumem-$apid.map" 5
n=$(last_iter)
wait_for 30 iter_past $((n + 5))
ok $? "the program goes on again (iter $(last_iter))"
ok "$(no_corrupt && echo 0 || echo 1)" "its buffers intact" || diag_file "$f" 3

# -- a write libphos cannot see: the check catches it, stop-the-world instead ------------
f2=$PD/indirect.out
start_app "$f2" indirect
ipid=$APP
wait_for 30 _has_lines "$f2" 5
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 checkpoint --leave-running --pid "$ipid"
ok $RC "a checkpoint of a program that writes a buffer through a pointer in device memory succeeds" ||
	{ diag "$OUT"; diag_file "$PD/n1.log" 30; }
like "$(log_since "$mark")" "buffer $((NBUF - 1)) .* changed before it was saved" \
	"phos-gpu finds the buffer that changed before it was saved"
like "$(log_since "$mark")" "failed validation; checkpointing again with the process stopped" \
	"phosd drops that copy and checkpoints again, stop-the-world"
like "$(log_since "$mark")" "saved in .* ms, directly while it waited \\(no room on the GPU for a snapshot\\)" \
	"the second time the program waits for the copy"
ok "$(grep -q CORRUPT "$f2" && echo 1 || echo 0)" "that program's buffers are intact" ||
	diag_file "$f2" 3
igen=$(ls -d "$(image_dir root "$ipid")"/0* | tail -1)
kill -KILL "$ipid"
wait_for 10 _gone "$ipid"
n2=$(wc -l <"$f2")
pc_out n1 restore --detach "$igen"
ok $RC "its image restores" || diag "$OUT"
irp=$(restored_pid "$OUT")
track "$irp"
wait_for 30 _has_lines "$f2" $((n2 + 5))
ok "$( (wait_for 1 _has_lines "$f2" $((n2 + 5)) && ! grep -q CORRUPT "$f2") && echo 0 || echo 1)" \
	"and runs on from it with every buffer as it was at the stop" || diag_file "$f2" 3
kill -KILL "$irp" 2>/dev/null
# the rest restores with a slow load (1 s a chunk): the program runs before
# its buffers are loaded and waits only for the ones it touches.  The first
# restore ignores the map's first-use ranks, so the program's first touch
# is not what the loader would start with anyway.
phosd_stop n1
PHOS_GPU_NO_RANKS=1 FAKECUDA_HTOD_DELAY_MS=1000 phosd_start n1 "gpu_concurrent_restore: true"

# -- stop mode, then restore ----------------------------------------------------------
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 checkpoint --pid "$apid"
ok $RC "a stop-mode checkpoint succeeds" || { diag "$OUT"; diag_file "$PD/n1.log" 30; }
like "$(log_since "$mark")" "the $NBUF GPU buffer\\(s\\) of pid $apid \\([0-9]* bytes\\) released [0-9]* ms after the checkpoint began" \
	"phosd says when it let go of the GPU memory"
wait_for 10 _gone "$apid"
ok $? "and the program is gone"
stopped=$(last_iter)
gen=$(image_dir root "$apid")/000003
is "$(wc -l <"$gen/gpumem-$apid.map" 2>/dev/null)" "$NBUF" "generation 3 holds the $NBUF buffers"
# (libphos ranks what the program touched while generation 2's save ran;
# generation 2's map ranks any buffer it did not touch then behind them,
# from the ranks libphos had before: under load the program may not reach
# its last buffer before that save ends)
kept=$(join <(ranks "$gen") <(ranks "$gen2") | awk '$2 != 0 { n++; if ($2 != $3) bad++ } END { print n + 0, bad + 0 }')
nranked=${kept% *}
like "$kept" "^[1-9][0-9]* 0\$" \
	"its map keeps those ranks: libphos sent them with the buffers (no save ran beside the program; ranked, differing: $kept)" ||
	diag "$(ranks "$gen")" "$(ranks "$gen2")"
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 restore --detach "$gen"
ok $RC "it restores" || { diag "$OUT"; diag_file "$PD/n1.log" 30; }
rp=$(restored_pid "$OUT")
track "$rp"
like "$(log_since "$mark")" "restored pid $rp took its $NBUF GPU buffer" \
	"phos-gpu loaded the buffers and the restored process took them"
like "$(log_since "$mark")" "loaded $NBUF buffer\\(s\\), .* while the process ran[a-zA-Z ,]* \\([1-9][0-9]* loaded first because the process was about to use them" \
	"it took them before they were loaded, and what it touched was loaded first"
like "$(log_since "$mark")" "loaded $NBUF buffer\\(s\\), .*, 0 in first-use order" \
	"(with PHOS_GPU_NO_RANKS=1 the loader goes by index)"
wait_for 30 iter_past $((stopped + 5))
ok $? "the restored program goes on (iter $stopped -> $(last_iter))"
# (a restored process's stderr is its task's, here /dev/null: the leave-
# running checkpoints' reattaches show the same lines)
like "$(cat "$PD/app.err")" "first kernel launch [0-9]+ ms after the reattach; the call took [0-9]+ ms" \
	"libphos (PHOS_DEBUG) says when the first launch after a reattach came and how long it took"
waits_said() { grep -q 'the longest waits for one buffer' "$PD/app.err"; }
wait_for 30 waits_said
like "$(grep 'the longest waits for one buffer' "$PD/app.err" | tail -1)" \
	"buffer [0-9]+ \\([0-9]+ MiB, (not )?begun\\) [0-9]+ ms from \\+[0-9]+ ms" \
	"and, once its first 256 launches are done, which buffers it waited for longest and how long"
like "$(grep 'a launch of .* waited' "$PD/app.err" | tail -1)" \
	"waited [0-9]+ ms for buffers still loading; its parameters name 1 of the table's buffers: buffer [0-9]+ \\(4 MiB\\) by the word at \\+0\$" \
	"and, for a launch that waited, the word of its parameters that named the buffer (the kernel's first)"
ok "$(no_corrupt && echo 0 || echo 1)" "and finds every word of every buffer as it was at the stop" ||
	diag_file "$f" 3
ok "$(consecutive "$f" iter >/dev/null && echo 0 || echo 1)" \
	"its iterations run on without gap or repeat across the three checkpoints" ||
	diag "$(consecutive "$f" iter)"
like "$(grep -c . "$PD/images/root/pid-$apid/0/0/000003/gpumem-$apid.map")" "^$NBUF$" \
	"the restored image is left as it was"
kill -KILL "$rp" 2>/dev/null

# -- a checkpoint while the restored program's buffers are still loading:
# libphos hands them over only once they are complete.  The loader goes by
# the map's ranks from here on.
phosd_stop n1
FAKECUDA_HTOD_DELAY_MS=1000 phosd_start n1 "gpu_concurrent_restore: true"
before=$(pgrep -d' ' -f fake_gpu_app)
mark=$(($(wc -l <"$PD/n1.log") + 1))
( pc n1 restore --detach "$gen" >"$PD/restore2.out" 2>&1 ) &
rbg=$!
newpid() { for p in $(pgrep -f fake_gpu_app); do [[ " $before " == *" $p "* ]] || { echo "$p"; return 0; }; done; return 1; }
wait_for 30 newpid
rp2=$(newpid)
track "$rp2"
took() { log_since "$mark" | grep -q "restored pid $rp2 took its $NBUF GPU buffer"; }
wait_for 10 took
pc_out n1 checkpoint --leave-running --pid "$rp2"
ok $RC "a checkpoint asked for while the restored program's buffers load succeeds" ||
	{ diag "$OUT"; diag_file "$PD/n1.log" 20; }
wait "$rbg"
like "$(log_since "$mark")" "loaded $NBUF buffer\\(s\\), .*, $nranked in first-use order" \
	"that restore's loader took the buffers in the order of the map's ranks ($nranked ranked)"
g4=$(ls -d "$(image_dir root "$rp2")"/0* 2>/dev/null | tail -1)
kill -KILL "$rp2" 2>/dev/null
wait_for 10 _gone "$rp2"
n=$(wc -l <"$f")
pc_out n1 restore --detach "$g4"
rp3=$(restored_pid "$OUT")
track "$rp3"
wait_for 30 _has_lines "$f" $((n + 5))
ok "$( (_has_lines "$f" $((n + 5)) && no_corrupt) && echo 0 || echo 1)" \
	"its image holds every buffer complete: restored, the program finds every word right" ||
	{ diag "$OUT"; diag_file "$f" 3; }
kill -KILL "$rp3" 2>/dev/null

# -- a load that fails half-way stops the restored program, never runs it on
# missing data, and leaves the image as it was
phosd_stop n1
FAKECUDA_HTOD_FAIL_AFTER=2 phosd_start n1 "gpu_concurrent_restore: true"
n=$(wc -l <"$f")
pc_out n1 restore --detach "$gen"
like "$RC $(tail -1 <<<"$OUT")" "^1 .*loading the GPU buffers of pid [0-9]* failed \\(phos-gpu: gpumem-$apid: loading buffer [0-9]* at offset [0-9]*: .*\\): the restored process is stopped; the image is unchanged" \
	"a restore whose GPU load fails half-way fails and says why, though detached"
sleep 1
ok "$( [ "$(wc -l <"$f")" = "$n" ] && echo 0 || echo 1)" "the restored program wrote nothing" ||
	diag_file "$f" 3
pc_out n1 list
like "$OUT" "pid-$apid +0 +0 +3 +yes" "the image is still listed as valid"

# -- a loader that dies before it offers any buffer (no GPU memory for them,
# say): phos-restore started it before CRIU; the restore fails with its words
# and no restored process is left
cat >"$PD/phos-gpu-oom" <<'SH'
#!/bin/sh
echo "phos-gpu: allocating 4194304 bytes on GPU 0: CUDA_ERROR_OUT_OF_MEMORY" >&2
exit 1
SH
chmod 0755 "$PD/phos-gpu-oom"
phosd_stop n1
PHOS_GPU_HELPER=$PD/phos-gpu-oom phosd_start n1 "gpu_concurrent_restore: true"
before=$(pgrep -d' ' -f fake_gpu_app)
n=$(wc -l <"$f")
pc_out n1 restore --detach "$gen"
like "$RC $(tail -1 <<<"$OUT")" "^1 .*loading the GPU buffers of pid $apid failed: phos-gpu: allocating 4194304 bytes on GPU 0: CUDA_ERROR_OUT_OF_MEMORY" \
	"a restore whose loader dies before the hand-over fails with the loader's words"
sleep 1
none_ran "after the loader died"

# -- the GPU check beside CRIU: a node whose driver cannot take the image's GPU state ----
# refuses it at CRIU's post-restore gate; no restored task ran, the image is kept
phosd_stop n1
FAKECUDA_DRIVER_VERSION=12000 phosd_start n1 "gpu_concurrent_restore: true"
pc_out n1 restore --detach "$gen"
like "$RC $(tail -1 <<<"$OUT")" "^1 .*refused: the image holds the GPU state of 1 CUDA process\\(es\\), but the NVIDIA driver supports CUDA 12\\.0; the checkpoint API needs driver >= 570 \\(CUDA 12\\.8\\): restore it on a node with an NVIDIA GPU and an NVIDIA driver >= 570 \\(the GPU check beside CRIU: no restored task ran\\)" \
	"a node whose driver is too old refuses the image's GPU state, beside CRIU, and says what would do"
sleep 1
none_ran "after the GPU check said no"
phosd_stop n1
phosd_start n1
restored_exact "$gen" "$f" "the image refused there restores here, every word as it was"

# -- periodic checkpoints store only what changed; retention sweeps the rest -----------
# (a program that changes its first buffer only; one generation kept)
phosd_stop n1
phosd_start n1 "keep_generations: 1"
f3=$PD/static.out
start_app "$f3" static
spid=$APP
sdone() { [ "$(sed -n 's/^iter //p' "$f3" | tail -1)" -ge "$1" ] 2>/dev/null; }
wait_for 30 sdone 3
pc_out n1 checkpoint --leave-running --pid "$spid"
mark=$(($(wc -l <"$PD/n1.log") + 1))
n=$(sed -n 's/^iter //p' "$f3" | tail -1)
wait_for 30 sdone $((n + 3))
pc_out n1 checkpoint --leave-running --pid "$spid"
ok $RC "a second checkpoint of a program that changed one buffer of $NBUF succeeds" ||
	{ diag "$OUT"; diag_file "$PD/n1.log" 20; }
# 4 MiB of the changed buffer: 4 chunks of one pattern, 1 to 4 of them
# written (workers may race to store the same new chunk); the others' 8
# found stored
cw=$(log_since "$mark" | sed -n 's/.*; \([0-9]*\) chunk(s) written ([0-9]* MB), \([0-9]*\) already stored.*/\1 \2/p')
ok "$(read -r w r <<<"$cw"; [ -n "$w" ] && [ "$w" -ge 1 ] && [ "$w" -le 4 ] &&
	[ $((w + r)) = $((NBUF * MIB)) ] && echo 0 || echo 1)" \
	"only the changed buffer's chunks are written again, the others' are reused (written, reused: $cw)"
like "$(log_since "$mark")" "retention: removed 1 chunk\\(s\\) \\(1048576 bytes\\)" \
	"retention removes generation 1 and the one chunk only it named"
sgen=$(ls -d "$(image_dir root "$spid")"/0* | tail -1)
is "$(ls "$(dirname "$sgen")/chunks" | wc -l)" "$NBUF" \
	"the store keeps the $NBUF chunks generation 2 names (each buffer's 4 MiB hold one 1 MiB pattern)"
kill -KILL "$spid" 2>/dev/null
wait_for 10 _gone "$spid"
restored_exact "$sgen" "$f3" "restored from shared chunks, the program finds every word as it was"

# -- storage gone: a concurrent restore whose chunk store is not there fails
# and says why, runs nothing, and the same image restores once it is back ----
phosd_stop n1
phosd_start n1 "gpu_concurrent_restore: true"
sc=$(dirname "$sgen")/chunks
mv "$sc" "$sc.gone"
n=$(wc -l <"$f3")
pc_out n1 restore --detach "$sgen"
like "$RC $(tail -1 <<<"$OUT")" "^1 .*names chunks of GPU memory, but: .*/chunks: No such file or directory \\(found while CRIU restored it: CRIU killed the restored tasks before they ran\\)" \
	"a concurrent restore whose chunk store is gone fails and says why"
sleep 1
ok "$( [ "$(wc -l <"$f3")" = "$n" ] && ! pgrep -f "fake_gpu_app static" >/dev/null && echo 0 || echo 1)" \
	"the restored program wrote nothing and is gone" || { diag_file "$f3" 3; diag "$(pgrep -af fake_gpu_app)"; }
mv "$sc.gone" "$sc"
restored_exact "$sgen" "$f3" "with the chunk store back the same image restores and the program finds every word"

# -- no first-use ranks (never saved while it ran): the loader begins the
# smallest buffers first (a process waits for the ones it touches one call
# at a time) ----------------------------------------------------------------------
f5=$PD/shrinking.out
stop_app "$f5" shrinking
hpid=$SPID
ok $RC "a stop checkpoint of a program whose buffers are $((NBUF * MIB)), ..., $MIB MiB succeeds" ||
	{ diag "$OUT"; diag_file "$PD/n1.log" 20; }
wait_for 10 _gone "$hpid"
hgen=$(ls -d "$(image_dir root "$hpid")"/0* | tail -1)
restored_order "$hgen" "$f5" "\\(smallest first, no ranks\\): $(seq -s ' ' $((NBUF - 1)) -1 0)" \
	"with no first-use ranks the loader begins the smallest buffer first, the largest last"

# -- gpu_rank_ms: a process never saved while it ran ranks its buffers by
# first use before the detach; the restore loads them in that order (the
# program touches its last buffer first: 2 1 0 from the top of its loop, a
# rotation of that from elsewhere; index order and smallest first, its
# buffers being equal, would say 0 1 2) ------------------------------------------------
phosd_stop n1
phosd_start n1 "gpu_concurrent_restore: true" "gpu_rank_ms: 500"
fr=$PD/ranked.out
stop_app "$fr"
kpid=$SPID
ok $RC "with gpu_rank_ms: 500 a stop checkpoint succeeds" || { diag "$OUT"; diag_file "$PD/n1.log" 20; }
like "$(log_since "$mark")" "1 process\\(es\\) rank their GPU buffers by first use for 500 ms \\(gpu_rank_ms\\) before the detach" \
	"phosd lets the process rank its buffers for 500 ms before it takes them"
wait_for 10 _gone "$kpid"
kgen=$(ls -d "$(image_dir root "$kpid")"/0* | tail -1)
# the buffers in rank order, by their line in the map (buffer k: line k + 1)
byrank=$(awk 'NF >= 7 { print $7, NR - 1 }' "$kgen/gpumem-$kpid.map" | sort -n | awk '{ printf "%s%s", sep, $2; sep = " " }')
like "$byrank" "^(2 1 0|1 0 2|0 2 1)\$" \
	"the map ranks the buffers in the order the program touches them (its last first), from wherever it stood: $byrank" ||
	diag_file "$kgen/gpumem-$kpid.map" 5
restored_order "$kgen" "$fr" "\\(by first-use rank, the unranked smallest first\\): $byrank" \
	"the restore loads them in that order"

# -- gpu_compress_level: chunks stored with zstd (when smaller), restored exactly ----------
phosd_stop n1
phosd_start n1 "gpu_compress_level: 3"
f4=$PD/zstd.out
start_app "$f4" static
zpid=$APP
zdone() { [ "$(sed -n 's/^iter //p' "$f4" | tail -1)" -ge "$1" ] 2>/dev/null; }
wait_for 30 zdone 3
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 checkpoint --leave-running --pid "$zpid"
like "$RC $(log_since "$mark" | grep -o 'zstd level 3: [0-9]* MB stored')" "^0 zstd level 3: 0 MB stored" \
	"with gpu_compress_level: 3 the chunks are stored compressed (12 MiB of repeated words: under 1 MB)"
zgen=$(ls -d "$(image_dir root "$zpid")"/0* | tail -1)
is "$(ls "$(dirname "$zgen")/chunks" | grep -c '^[0-9a-f]\{64\}\.zst$')" "$NBUF" "as <sha256>.zst files"
kill -KILL "$zpid" 2>/dev/null
wait_for 10 _gone "$zpid"
restored_exact "$zgen" "$f4" "restored from compressed chunks, the program finds every word as it was"

# a chunk with a flipped byte fails the restore (flipped, not overwritten:
# the byte may already be the one written, as when the program stopped at
# its iteration 0x55).  Its buffer is checked on the GPU by the map's keyed
# sums, which stand for each chunk's SHA-256; PHOS_GPU_LOAD_SHA=1 checks
# each chunk by its SHA-256 as it is read, and names it
chunk=$(sed -n 2p "$(ls "$gen"/gpumem-"$apid"-*.idx | head -1)")
cf=$(dirname "$gen")/chunks/$chunk
old=$(od -An -tx1 -j 4096 -N 1 "$cf" | tr -d ' ')
printf '%b' "\\x$(printf '%02x' $((0x$old ^ 0xff)))" | dd of="$cf" bs=1 seek=4096 conv=notrunc status=none
pc_out n1 restore --detach "$gen"
like "$RC $(tail -1 <<<"$OUT")" "^1 .*what landed on GPU 0 does not match the keyed sums in the map \\(they check its chunks, not each chunk's SHA-256\\): a chunk in the store is damaged or was changed.*PHOS_GPU_LOAD_SHA=1 in phosd's environment to name a damaged chunk" \
	"a flipped byte in a stored chunk fails the restore: the keyed sums on the GPU catch it"
phosd_stop n1
PHOS_GPU_LOAD_SHA=1 phosd_start n1 "gpu_compress_level: 3"
pc_out n1 restore --detach "$gen"
like "$RC $(tail -1 <<<"$OUT")" "^1 .*chunk ${chunk:0:16}\\.\\.\\. does not hold the bytes its name says \\(corrupt\\).*the image is damaged" \
	"with PHOS_GPU_LOAD_SHA=1 each chunk's SHA-256 catches it first, naming the chunk"

# each buffer is checked where it landed, on its GPU, once its last chunk is
# there: that covers the copy too.  A byte flipped on its way to the device
# (the fake's FAKECUDA_HTOD_FLIP, after the chunk matched its SHA-256) fails
# the restore, and the same image restores once the copies are sound again
phosd_stop n1
PHOS_GPU_LOAD_SHA=1 FAKECUDA_HTOD_FLIP=2 phosd_start n1 "gpu_concurrent_restore: true"
pc_out n1 restore --detach "$zgen"
like "$RC $(tail -1 <<<"$OUT")" "^1 .*what landed on GPU 0 does not match the hash in the map, though each chunk matched its SHA-256 as it was read.*the image is unchanged: restore again" \
	"a byte flipped on its way to the GPU fails the restore: each buffer is checked where it landed"
# a GPU that cannot run the check after all (FAKECUDA_HASH_FAIL_AFTER=1: the
# probe before the load passes, the first buffer's hash fails) stops the load
phosd_stop n1
FAKECUDA_HASH_FAIL_AFTER=1 phosd_start n1 "gpu_concurrent_restore: true"
pc_out n1 restore --detach "$zgen"
like "$RC $(tail -1 <<<"$OUT")" "^1 .*could not be checked on GPU 0 \\(.+\\): the load stopped; the image is unchanged: restore again, with PHOS_GPU_LOAD_VIA_CPU=1" \
	"a buffer the GPU cannot check stops the restore, and the message says what to do"
# a GPU whose hash kernel does not agree with the host (FAKECUDA_HASH_WRONG:
# as a miscompiled kernel would) is found out on a test pattern before the
# load: the CPU checks it, each chunk by its SHA-256, and it restores exactly
phosd_stop n1
FAKECUDA_HASH_WRONG=1 phosd_start n1 "gpu_concurrent_restore: true"
mark=$(($(wc -l <"$PD/n1.log") + 1))
restored_exact "$zgen" "$f4" "a GPU whose hash kernel sums wrongly: the restore is exact all the same"
like "$(log_since "$mark")" "each buffer checked by the CPU: GPU 0's hash kernel does not agree with the host on a test pattern \\([0-9a-f ]+ against [0-9a-f ]+, keyed\\)" \
	"the kernel was tried on a pattern first, and the CPU checked the load" ||
	diag "$(log_since "$mark" | grep phos-gpu | head -5)"
phosd_stop n1
phosd_start n1 "gpu_concurrent_restore: true"
mark=$(($(wc -l <"$PD/n1.log") + 1))
restored_exact "$zgen" "$f4" "and the same image restored again finds every word as it was"
like "$(log_since "$mark")" "phos-gpu: loaded $NBUF buffer\\(s\\), .* while the process ran, each buffer checked on its GPU by keyed sums, the chunks not by SHA \\(" \
	"phosd's log says where and how the load was checked"
# a loader given no key cannot check keyed sums, and says so
kdir=$PD/keyed
mkdir -p "$kdir/img" && cp "$zgen"/gpumem-* "$kdir/img/" && cp -r "$(dirname "$zgen")/chunks" "$kdir/"
ztag=$(basename "$(ls "$kdir"/img/gpumem-*.map)" .map); ztag=${ztag#gpumem-}
out=$(cd "$kdir/img" && env -u PHOS_GPU_SUMS_KEY "$PHOS_GPU_HELPER" load "$ztag" 3>/dev/null 2>&1); rc=$?
like "$rc $(tail -1 <<<"$out")" "^1 phos-gpu: gpumem-$ztag.map holds keyed sums \\(k1\\), and phos-gpu got no key to check them" \
	"phos-gpu load without the generation's key refuses a map of keyed sums, and says why"
rm -rf "$kdir"
# an image from before keyed sums restores as it did: zgen's map made as
# older versions wrote it (the fixed weights 2i + 1, no k1), its manifest
# updated and signed again; each chunk is then checked by its SHA-256
unkeyed_map() {	# unkeyed_map GEN: rewrite GEN's map the old way
	python3 - "$1" <<'PY'
import glob, os, re, subprocess, sys, hashlib
gen = sys.argv[1]
mp = glob.glob(os.path.join(gen, "gpumem-*.map"))[0]
out = []
for line in open(mp):
    f = line.split()
    idx = open(os.path.join(gen, f[3])).read().split()
    shas = idx[4:]
    data = b""
    for h in shas:
        c = os.path.join(gen, "..", "chunks", h)
        data += open(c, "rb").read() if os.path.exists(c) else \
            subprocess.run(["zstd", "-dcq", c + ".zst"], check=True, capture_output=True).stdout
    a = b = 0
    for i in range(len(data) // 4):
        w = int.from_bytes(data[4 * i:4 * i + 4], "little")
        a += w * (2 * i + 1)
        b += w * w * (2 * i + 1)
    out.append("%s %s %s %s %016x %016x %s\n" % (f[0], f[1], f[2], f[3], a % 2**64, b % 2**64, f[6]))
open(mp, "w").write("".join(out))
body = open(mp, "rb").read()
man = os.path.join(gen, "manifest.yaml")
text = open(man).read()
name = os.path.basename(mp)
m = re.search(r"- name: " + re.escape(name) + r"\n(\s+)size: \d+\n\s+sha256: [0-9a-f]+", text)
text = text[:m.start()] + "- name: %s\n%ssize: %d\n%ssha256: %s" % (
    name, m.group(1), len(body), m.group(1), hashlib.sha256(body).hexdigest()) + text[m.end():]
open(man, "w").write(text)
PY
}
if unkeyed_map "$zgen" 2>"$PD/unkeyed.err"; then
	sign "$zgen"
	is "$(awk 'NF != 7' "$zgen"/gpumem-*.map | wc -l)" 0 "(the map rewritten as before keyed sums: 7 fields a line)"
	mark=$(($(wc -l <"$PD/n1.log") + 1))
	restored_exact "$zgen" "$f4" "an image whose map has the sums of older versions restores exactly"
	like "$(log_since "$mark")" "phos-gpu: loaded $NBUF buffer\\(s\\), .* while the process ran, each buffer checked on its GPU \\(" \
		"checked on the GPU with the old weights, each chunk by its SHA-256 (no keyed sums)"
else
	ok 1 "rewriting the map the old way: $(cat "$PD/unkeyed.err")"
	skip "no map of older versions" 2
fi

# -- the staging pool: a stop checkpoint lets go of the GPU memory once it is
# in host memory, before storage is written (doc/concurrent-checkpoint.md) ----------
phosd_stop n1
phosd_start n1 "gpu_stage_pool_gib: 1"
pool_ready() { grep -q 'staging pool: 1 GiB ready' "$PD/n1.log"; }
# restore_latest PID FILE DESCRIPTION: restore PID's newest generation on n1
# and check, as one test, that the program goes on (FILE gets 3 more lines)
# and finds every word as it was; the restored pid in RP (tracked)
restore_latest() {
	local n
	n=$(wc -l <"$2")
	pc_out n1 restore --detach "$(ls -d "$(image_dir root "$1")"/0* | tail -1)"
	RP=$(restored_pid "$OUT")
	track "$RP"
	wait_for 30 _has_lines "$2" $((n + 3))
	ok "$( (_has_lines "$2" $((n + 3)) && ! grep -q CORRUPT "$2") && echo 0 || echo 1)" "$3" ||
		{ diag "$OUT"; diag_file "$2" 3; }
}
pool_ready_n() { [ "$(grep -c 'staging pool: 1 GiB ready' "$PD/n1.log")" -ge "$1" ]; }
wait_for 60 pool_ready
ok $? "phosd fills a 1 GiB staging pool at start: $(grep -o 'staging pool: 1 GiB ready.*' "$PD/n1.log" | sed 's/.*ready //')" ||
	diag_file "$PD/n1.log" 10
pc_out n1 status
like "$OUT" "^staging pool: +1 GiB of (shared memory|hugetlb 2 MiB pages), free$" "phosctl status shows the pool and that it is free"
# round 1 pins each piece of the pool for its copy (the default); round 2
# copies through two pinned buffers a worker (PHOS_GPU_STAGE_BOUNCE=1 in
# phosd's environment, which its phos-gpu inherits)
for round in 1 2; do
	f5=$PD/stage$round.out
	how="each piece pinned by its copy's worker"
	if [ "$round" = 2 ]; then
		phosd_stop n1
		PHOS_GPU_STAGE_BOUNCE=1 phosd_start n1 "gpu_stage_pool_gib: 1"
		wait_for 60 pool_ready_n 2
		how="each chunk through a pinned buffer of its worker's"
	fi
	start_app "$f5"
	spid=$APP
	n=$(cat "$f5" 2>/dev/null | wc -l)
	wait_for 30 _has_lines "$f5" $((n + 3))
	mark=$(($(wc -l <"$PD/n1.log") + 1))
	pc_out n1 checkpoint --pid "$spid"
	ok $RC "stop checkpoint $round with the pool succeeds" || { diag "$OUT"; diag_file "$PD/n1.log" 20; }
	rel=$(log_since "$mark" | grep -n "of pid $spid .* released [0-9]* ms after the checkpoint began (in the staging pool in" | cut -d: -f1 | head -1)
	sav=$(log_since "$mark" | grep -n "phos-gpu: saved $NBUF buffer(s), .* (staged: GPU to host memory in" | cut -d: -f1 | head -1)
	ok "$([ -n "$rel" ] && [ -n "$sav" ] && [ "$rel" -lt "$sav" ] && echo 0 || echo 1)" \
		"phosd let go of the GPU memory once it was in the pool, before phos-gpu had stored it (log lines $rel < $sav)" ||
		diag "$(log_since "$mark" | grep -E 'released|saved|staging' | head -5)"
	like "$(log_since "$mark" | grep -o 'phos-gpu: staged copy began.*')" "; $how\$" \
		"round $round: the staged copy went the way asked ($how)"
	early=$(log_since "$mark" | grep -n "the $NBUF GPU buffer(s) of pid $spid go to the staging pool while the rest is checkpointed" | cut -d: -f1 | head -1)
	cuda=$(log_since "$mark" | grep -n "CUDA state of 1 process(es) checkpointed" | cut -d: -f1 | head -1)
	ok "$([ -n "$early" ] && [ -n "$cuda" ] && [ "$early" -lt "$cuda" ] && echo 0 || echo 1)" \
		"the copy into the pool began before the driver checkpoint, not after the dump (log lines $early < $cuda)" ||
		diag "$(log_since "$mark" | head -20)"
	wait_for 10 _gone "$spid"
	n=$(cat "$f5" 2>/dev/null | wc -l)
	sgen=$(ls -d "$(image_dir root "$spid")"/0* | tail -1)
	mark=$(($(wc -l <"$PD/n1.log") + 1))
	pc_out n1 restore --detach "$sgen"
	rp=$(restored_pid "$OUT")
	track "$rp"
	wait_for 30 _has_lines "$f5" $((n + 3))
	ok "$( (_has_lines "$f5" $((n + 3)) && ! grep -q CORRUPT "$f5") && echo 0 || echo 1)" \
		"restored on the same node, the program finds every word as it was" ||
		{ diag "$OUT"; diag_file "$f5" 3; }
	like "$(log_since "$mark" | grep -o "loaded $NBUF buffer(s), [0-9]* bytes in [0-9]* ms[a-z ]*")" \
		"from the staging pool" "its buffers came from the staging pool, not from storage" ||
		diag "$(log_since "$mark" | grep -E 'staging|loaded' | head -5)"
	kill -KILL "$rp" 2>/dev/null
	wait_for 10 _gone "$rp"
done
# the pool serves one restore: the same generation again comes from storage
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 restore --detach "$sgen"
rp=$(restored_pid "$OUT")
track "$rp"
wait_for 30 _has_lines "$f5" 3
line=$(log_since "$mark" | grep -o "loaded $NBUF buffer(s), [0-9]* bytes in [0-9]* ms[a-z ]*")
ok "$( [ "$RC" = 0 ] && [ -n "$line" ] && ! grep -q 'staging pool' <<<"$line" && echo 0 || echo 1)" \
	"restored a second time, the same generation loads from storage (a pool serves one restore): $line"
ok "$( ! grep -q CORRUPT "$f5" && echo 0 || echo 1)" "and every word is as it was"
kill -KILL "$rp" 2>/dev/null
wait_for 10 _gone "$rp"
f5=$PD/stage3.out
# a helper that cannot have a context beside the process's (EXCLUSIVE_PROCESS:
# the fake refuses the first context asked for while $busy exists) is started
# again after the dump, and the checkpoint is good
phosd_stop n1
busy=$PD/busy-once
FAKECUDA_BUSY_ONCE=$busy phosd_start n1 "gpu_stage_pool_gib: 1"
wait_for 60 pool_ready_n 3
start_app "$f5"
spid=$APP
wait_for 30 _has_lines "$f5" 3
touch "$busy"
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 checkpoint --pid "$spid"
like "$RC $(log_since "$mark" | grep -o "could not go to the staging pool before the dump (.*): they are saved after it")" \
	"^0 could not go to the staging pool before the dump \\(.*CUDA_ERROR_.*\\): they are saved after it" \
	"a helper refused a context before the dump is started again after it, and the checkpoint succeeds" ||
	diag "$(log_since "$mark" | head -20)"
wait_for 10 _gone "$spid"
n=$(wc -l <"$f5")
# pool_changed MEMFD SPID OUTFILE WHAT: 8 bytes written at 4 KiB into the
# first of phosd's fds that is /memfd:MEMFD* (a pool whose bytes changed);
# the restore of SPID's last generation must fail saying so (WHAT), the
# image untouched, and the retry read storage, every word as it was
pool_changed() {
	local pfd
	pfd=$(find "/proc/${PHOSD_PID[n1]}/fd" -lname "/memfd:$1*" -printf '%f\n' 2>/dev/null |
		sort -n | head -1)
	printf 'XXXXXXXX' | dd of="/proc/${PHOSD_PID[n1]}/fd/$pfd" bs=1 seek=4096 conv=notrunc status=none
	pc_out n1 restore --detach "$(ls -d "$(image_dir root "$2")"/0* | tail -1)"
	like "$RC $(tail -1 <<<"$OUT")" \
		"^1 .*the staging pool does not hold what was saved .*restore again, from storage" \
		"$4 (fd $pfd of phosd written)" || diag "$OUT"
	restore_latest "$2" "$3" "and the retry restores from storage with every word as it was"
	kill -KILL "$RP" 2>/dev/null
	wait_for 10 _gone "$RP"
}
pool_changed phos-stage "$spid" "$f5" "a pool that does not hold what was saved fails the restore with the reason"
rm -f "$f5"
# a checkpoint does not take the pool while a restore still loads from it
# (slow loads: 1 s a chunk): its GPU memory goes straight to storage
phosd_stop n1
FAKECUDA_HTOD_DELAY_MS=1000 phosd_start n1 "gpu_stage_pool_gib: 1" "gpu_concurrent_restore: true"
wait_for 60 pool_ready_n 4
fa=$PD/stageA.out fb=$PD/stageB.out
start_app "$fa"; apa=$APP
start_app "$fb"; apb=$APP
wait_for 30 _has_lines "$fa" 3
wait_for 30 _has_lines "$fb" 3
pc_out n1 checkpoint --pid "$apa"
wait_for 10 _gone "$apa"
# (phosctl restore returns once the load is over: B's checkpoint is asked
# for while it runs)
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc n1 restore --detach "$(ls -d "$(image_dir root "$apa")"/0* | tail -1)" \
	>"$PD/restoreA.out" 2>&1 &
rjob=$!
loading() { log_since "$mark" | grep -q 'load from the staging pool'; }
wait_for 20 loading
pc_out n1 checkpoint --pid "$apb"
like "$RC $(log_since "$mark" | grep -o 'staging pool in use by a restore that loads from it.*')" \
	"^0 staging pool in use by a restore that loads from it: GPU memory goes straight to storage" \
	"a checkpoint while a restore loads from the pool leaves the pool alone and succeeds" ||
	diag "$(log_since "$mark" | head -10)"
wait "$rjob"
rpa=$(restored_pid "$(cat "$PD/restoreA.out")")
track "$rpa"
wait_for 30 _has_lines "$fa" $(($(wc -l <"$fa") + 3))
ok "$( [ -n "$rpa" ] && ! grep -q CORRUPT "$fa" && echo 0 || echo 1)" \
	"and the restore reading the pool goes on exactly" || diag_file "$PD/restoreA.out"
kill -KILL "$rpa" 2>/dev/null

# a leave-running checkpoint does not take the pool: the process keeps its buffers
start_app "$f5"
spid=$APP
wait_for 30 _has_lines "$f5" 3
mark=$(($(wc -l <"$PD/n1.log") + 1))
pc_out n1 checkpoint --leave-running --pid "$spid"
like "$RC $(log_since "$mark" | grep -c 'staged\|staging pool')" "^0 0$" \
	"a leave-running checkpoint succeeds without the pool"
kill -KILL "$spid" 2>/dev/null

# -- a pool the driver pins (gpu_stage_pool_pinned): `phos-gpu pool-create`
# makes it when phosd starts (on the fake driver, memfds behind the fds), a
# stop checkpoint copies into it with nothing pinned on the way, and the
# restore on this node loads from it (doc/concurrent-checkpoint.md)
phosd_stop n1
phosd_start n1 "gpu_stage_pool_gib: 2" "gpu_stage_pool_pinned: true"
pinned_ready() { grep -q 'staging pool: 2 GiB ready .*pinned by the NVIDIA driver' "$PD/n1.log"; }
wait_for 60 pinned_ready
ok $? "phosd has phos-gpu make a 2 GiB pool the driver pins: $(grep -o 'staging pool: 2 GiB ready.*' "$PD/n1.log" | tail -1)" ||
	diag "$(grep 'staging pool' "$PD/n1.log" | tail -3)"
pc_out n1 status
like "$OUT" "staging pool: +2 GiB of host memory pinned by the NVIDIA driver, free" \
	"phosctl status says what the pool is"
f6=$PD/stage6.out
stop_app "$f6"
spid=$SPID
ok $RC "a stop checkpoint through the driver-pinned pool succeeds" || { diag "$OUT"; diag_file "$PD/n1.log" 20; }
like "$(log_since "$mark" | grep -o 'phos-gpu: staged copy began.*')" "; the pool pinned by the driver beforehand\$" \
	"its copy into the pool pinned nothing on the way"
like "$(log_since "$mark" | grep -o "of pid $spid .* released [0-9]* ms after the checkpoint began")" "released" \
	"and phosd let go of the GPU memory once it was in the pool"
wait_for 10 _gone "$spid"
mark=$(($(wc -l <"$PD/n1.log") + 1))
restore_latest "$spid" "$f6" "restored on the same node, the program finds every word as it was"
rp=$RP
like "$(log_since "$mark" | grep -o "loaded $NBUF buffer(s), [0-9]* bytes in [0-9]* ms[a-z ]*[(][a-zA-Z ]*")" \
	"straight from the staging pool .checked on the GPU" \
	"its buffers came from the driver-pinned pool straight to the GPU, checked there"
kill -KILL "$rp" 2>/dev/null
wait_for 10 _gone "$rp"
# pool_stop N READY ENV=VALUE... -- CONF...: phosd restarted on n1 with ENV
# in its environment (its phos-gpu inherits it) and CONF lines, until its
# log says READY; then a program started (output in $PD/stageN.out: F) and
# stopped by a checkpoint (SPID, RC, OUT; its log lines: log_since "$mark")
pool_stop() {
	local n=$1 ready=$2 env=()
	shift 2
	while [ "$1" != -- ]; do env+=("$1"); shift; done
	shift
	phosd_stop n1
	mark=$(($(wc -l <"$PD/n1.log") + 1))
	local kv
	for kv in "${env[@]}"; do export "${kv?}"; done
	phosd_start n1 "$@"
	for kv in "${env[@]}"; do unset "${kv%%=*}"; done
	_ready_since() { log_since "$mark" | grep -q "$ready"; }
	wait_for 60 _ready_since
	F=$PD/stage$n.out
	stop_app "$F"
}
# a driver-pinned pool whose bytes changed (written through phosd's fd of
# its first piece): the direct load's check on the GPU fails the restore,
# saying so, and the retry reads storage
pool_stop 9 'staging pool: 2 GiB ready .*pinned by the NVIDIA driver' -- \
	"gpu_stage_pool_gib: 2" "gpu_stage_pool_pinned: true"
ok $RC "a stop checkpoint through the driver-pinned pool succeeds" || diag "$OUT"
wait_for 10 _gone "$SPID"
pool_changed fakecuda-vmm "$SPID" "$F" \
	"a driver-pinned pool that does not hold what was saved fails the restore: the GPU's check caught it"
# the CPU refused access to the driver-pinned pool (FAKECUDA_ACCESS_REFUSE=
# host): the GPU memory still goes once it is in the pool, phos-gpu writes
# the pool to storage through the GPU; a restore on this node that would
# read the pool through the CPU (PHOS_GPU_LOAD_VIA_CPU=1, the A/B of the
# direct load) loads from storage; each says why
pool_stop 7 'staging pool: 2 GiB ready .*pinned by the NVIDIA driver' FAKECUDA_ACCESS_REFUSE=host \
	PHOS_GPU_LOAD_VIA_CPU=1 -- "gpu_stage_pool_gib: 2" "gpu_stage_pool_pinned: true"
spid=$SPID f7=$F
ok $RC "a stop checkpoint through a pinned pool the CPU may not read succeeds" ||
	{ diag "$OUT"; diag "$(log_since "$mark" | tail -20)"; }
like "$(log_since "$mark" | grep -o 'phos-gpu: the CPU cannot read the staging pool.*')" \
	"the driver pinned \\(.+\\): it is written to storage through the GPU\$" \
	"phos-gpu writes the pool to storage through the GPU, and says why"
like "$(log_since "$mark" | grep -o "of pid $spid .* released [0-9]* ms after the checkpoint began (in the staging pool")" \
	"released" "the GPU memory went once it was in the pool"
wait_for 10 _gone "$spid"
mark=$(($(wc -l <"$PD/n1.log") + 1))
restore_latest "$spid" "$f7" "restored on the same node, the program finds every word as it was"
like "$(log_since "$mark" | grep -o 'phos-gpu: loaded [0-9]* buffer(s).*')" \
	"ms from storage \\(the staging pool the driver pinned could not be mapped: granting access to piece 1 of 1 of the staging pool: .+\\), each buffer checked by the CPU \\(" \
	"the restore loads from storage, and says why (checked by the CPU: PHOS_GPU_LOAD_VIA_CPU=1)" || diag "$(log_since "$mark" | grep -i 'pool\|phos-gpu' | head)"
kill -KILL "$RP" 2>/dev/null
wait_for 10 _gone "$RP"
# a staged copy that breaks off (the second 2 MiB piece cannot be pinned:
# FAKECUDA_REGISTER_FAIL_AFTER=1) goes straight to storage from the GPU
# memory, which is still the process's: the checkpoint loses nothing
pool_stop 8 'staging pool: 1 GiB ready' FAKECUDA_REGISTER_FAIL_AFTER=1 PHOS_GPU_STAGE_PIECE_MB=2 -- \
	"gpu_stage_pool_gib: 1"
spid=$SPID f8=$F
ok $RC "a stop checkpoint whose copy into the pool breaks off succeeds" ||
	{ diag "$OUT"; diag "$(log_since "$mark" | tail -20)"; }
like "$(log_since "$mark" | grep -o 'phos-gpu: copying into the staging pool failed.*')" \
	"\\(pinning 2 MiB of the staging pool for buffer [0-9]+: .+\\): straight to storage\$" \
	"phos-gpu says the copy into the pool broke off, and why"
is "$(log_since "$mark" | grep -c "of pid $spid .* (in the staging pool")" 0 \
	"phosd does not count the pool as holding that checkpoint"
wait_for 10 _gone "$spid"
restore_latest "$spid" "$f8" "restored from storage, the program finds every word as it was"
kill -KILL "$RP" 2>/dev/null
wait_for 10 _gone "$RP"
# a pool-create that fails (here: no phos-gpu at all) leaves a pool pinned
# on the way, and the log says why
phosd_stop n1
mark=$(($(wc -l <"$PD/n1.log") + 1))
PHOS_GPU_HELPER=$PD/no-such-phos-gpu phosd_start n1 "gpu_stage_pool_gib: 1" "gpu_stage_pool_pinned: true"
fallback_ready() { log_since "$mark" | grep -q 'staging pool: 1 GiB ready .*(shared memory\|hugetlb)'; }
wait_for 60 fallback_ready
ok $? "without a pool the driver pins, phosd fills one pinned on the way" ||
	diag "$(grep 'staging pool' "$PD/n1.log" | tail -3)"
like "$(grep -o 'no host memory pinned by the NVIDIA driver for it (.*' "$PD/n1.log" | tail -1)" \
	"no-such-phos-gpu.*a pool pinned piece by piece instead" "and its log says why"

# -- phos-gpu killed during a save (the OOM killer's way): the checkpoint
# fails and says how phos-gpu ended, not only its last line; nothing is
# published and the program goes on with its buffers intact
phosd_stop n1
FAKECUDA_DTOH_DELAY_MS=1000 phosd_start n1
f_keep=$f f=$PD/app-killed.out
start_app "$f"
kpid=$APP
wait_for 30 iter_past 3
( _saving() { pgrep -f "phos-gpu save $kpid" >/dev/null; }
  wait_for 20 _saving && sleep 0.5 && pkill -KILL -f "phos-gpu save $kpid" ) &
killer=$!
pc_out n1 checkpoint --pid "$kpid"
wait "$killer"
ok "$([ "$RC" != 0 ] && echo 0 || echo 1)" "a checkpoint whose phos-gpu is killed fails" || diag "$OUT"
like "$OUT" "saving the GPU buffers of pid $kpid failed: phos-gpu was killed by signal 9 \\(Killed\\): the kernel's OOM killer\\?" \
	"and says phos-gpu was killed, by which signal, and where to look"
is "$(ls "$(image_dir root "$kpid")" 2>/dev/null | grep -c '^[0-9]')" 0 "no generation is published"
n=$(last_iter)
wait_for 30 iter_past $((n + 3))
ok $? "the program goes on (iter $(last_iter))"
ok "$(no_corrupt && echo 0 || echo 1)" "with every word of its buffers intact" || diag_file "$f" 3
kill -KILL "$kpid" 2>/dev/null
f=$f_keep

# -- phos-gpu refuses what it cannot use, and says what --------------------------------
GPUH=$PHOS_GPU_HELPER
bad=$PD/bad; mkdir -p "$bad"
head -c $((2 << 20)) /dev/zero >"$bad/buf"
head -c 7 /dev/zero >"$bad/tab"
out=$(cd "$bad" && echo "0x7f0000000000 2097152 0" |
	"$GPUH" save 9 --table 4 3<>"$bad/buf" 4<>"$bad/tab" 2>&1); rc=$?
like "$rc $out" "^1 .*phos-gpu: the save table \\(fd 4\\) is not one of 1 buffers" \
	"phos-gpu save with a table of the wrong size refuses it (exit 1): $(tail -1 <<<"$out")"
out=$(cd "$bad" && PHOS_GPU_SUMS_KEY=0x23456789abcdef "$GPUH" load 9 3>/dev/null 2>&1); rc=$?
like "$rc $out" "^2 phos-gpu: PHOS_GPU_SUMS_KEY is not 16 hex digits \\(not 0\\)" \
	"phos-gpu refuses a sums key that is not exactly 16 hex digits (a 0x prefix included)"
out=$("$GPUH" save 9 --table 2 2>&1); rc=$?
like "$rc $out" "^2 usage:" "phos-gpu save --table on a standard fd is a usage error"
out=$(cd "$bad" && echo "0x7f0000000000 2097152 0" | "$GPUH" save 9 3<>"$bad/buf" 2>&1); rc=$?
like "$rc $(tail -1 <<<"$out")" "^1 phos-gpu: no chunk store \\.\\./chunks beside the image directory \\(phosd makes it\\): No such file" \
	"phos-gpu save without the task's chunk store refuses, and writes nothing"
is "$(ls "$bad" | grep -c gpumem-9)" 0 "(no map left behind)"
printf '0x7f0000000000 2097152\n' >"$bad/gpumem-9.map"
out=$(cd "$bad" && "$GPUH" load 9 3>/dev/null 2>&1); rc=$?
like "$rc $out" "^1 phos-gpu: gpumem-9.map: bad line: 0x7f0000000000 2097152" \
	"phos-gpu load names a malformed map line"
printf '0x7f0000000000 4194304 0 buf\n' >"$bad/gpumem-9.map"
out=$(cd "$bad" && "$GPUH" load 9 3>/dev/null 2>&1); rc=$?
like "$rc $out" "^1 phos-gpu: buf: missing or of the wrong size \\(4194304 bytes expected\\)" \
	"phos-gpu load refuses a buffer file of the wrong size"

phosd_finish
done_testing
