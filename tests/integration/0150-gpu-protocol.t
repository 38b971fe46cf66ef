#!/bin/bash
# 0150-gpu-protocol.t: phosd's side of the GPU detach/reattach protocol
# (doc/protocol.md, "GPU memory") on its real socket, with memfds standing in
# for exported GPU buffers (tests/progs/gpu_peer; the GPU side is proven by
# tests/gpu/run-all.sh f-h):
# - GPU_DETACH and GPU_REATTACH nobody asked for are refused and the fds
#   passed along are not kept;
# - phos-restore's offer (root, GPU_DETACH + PID) makes phosd signal REATTACH
#   to that pid and hand it the same buffers, byte for byte, on its
#   GPU_REATTACH; then nothing is left to take;
# - an offer from a user who is not root is only a detach of their own
#   process, which nobody asked for; a malformed offer is refused and says
#   why;
# - phos-gpu (phosd's helper) says how to call it, and what is missing on a
#   node without the NVIDIA driver.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
# shellcheck source=lib-phosd.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-phosd.sh"
phosd_require
require_built tests/progs/gpu_peer
command -v setpriv >/dev/null || skip_all "setpriv (util-linux) not installed"
plan 23

phosd_scratch
phosd_start n1
S=$PD/n1.sock
chmod 0666 "$S" 2>/dev/null
PEER=$PROGS/gpu_peer
EAGAIN=11 ENOENT=2 EBADMSG=74	# Linux

out=$("$PEER" detach "$S")
like "$out" "^errno $EAGAIN " "an unsolicited GPU_DETACH is refused (EAGAIN): $out"
out=$("$PEER" reattach "$S")
like "$out" "^errno $ENOENT " "an unsolicited GPU_REATTACH finds nothing (ENOENT): $out"
is "$(ls -l /proc/"${PHOSD_PID[n1]}"/fd | grep -c 'memfd:gpu_peer')" 0 \
	"phosd keeps no fd of a refused GPU_DETACH"

# the restored process: waits for REATTACH, takes its buffers
coproc WAITER { exec "$PEER" wait "$S"; }
exec {WR}<&"${WAITER[0]}"
read -r -t 10 _ wpid <&"$WR"
track "$wpid"
out=$("$PEER" offer "$S" "$wpid" 3)
is "$out" "errno 0 " "phos-restore's offer of 3 buffers for pid $wpid is taken: $out"
read -r -t 20 line <&"$WR"
is "$line" "reattached 3 ok" "pid $wpid got the 3 buffers back on its GPU_REATTACH, byte for byte"
like "$(grep 'took its' "$PD/n1.log" | tail -1)" "restored pid $wpid took its 3 GPU buffer" \
	"phosd logs the hand-over"
out=$("$PEER" reattach "$S")
like "$out" "^errno $ENOENT " "nothing is left to take afterwards: $out"

# not root: a PID attribute does not make an offer
out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups "$PEER" offer "$S" "$wpid" 1)
like "$out" "^errno $EAGAIN " "nobody's 'offer' is a detach nobody asked for: $out"

out=$("$PEER" badoffer "$S" "$wpid")
like "$out" "^errno $EBADMSG malformed GPU_DETACH \\(48 record bytes for 1 fds\\)" \
	"an offer whose records and fds differ is refused: $out"

GPU=$top_builddir/daemon/phos-gpu
out=$("$GPU" save 2>&1); rc=$?
like "$rc $out" "^2 usage: phos-gpu save TAG \\[--snapshot\\] \\[--table FD\\] \\[--zstd LEVEL\\] \\[--stage FD:OFFSET \\[--stage-cuda FIRST:COUNT:PIECE_MIB\\]\\] \\| load TAG \\[--concurrent\\] \\[--stage FD:OFFSET \\[--stage-cuda \\.\\.\\.\\]\\] \\| pool-create COUNT PIECE_GIB" \
	"phos-gpu with missing arguments exits 2 with its usage"
for bad in "--stage 4" "--stage 4:1048576" "--stage 2:0" "--stage 4:x" \
	"--stage 4:0 --stage-cuda 5:0:1024" "--stage 4:0 --stage-cuda 5:2:1000" \
	"--stage 4:0 --stage-cuda 2:1:1024" "--stage 4:0 --stage-cuda 5:129:1024"; do
	out=$("$GPU" load 9 $bad 2>&1); rc=$?
	like "$rc $out" "^2 usage:" "phos-gpu load $bad (no fd:offset at a 2 MiB boundary, or no first fd:count:whole GiB pieces) is a usage error"
done
for bad in "0 1" "1 0" "129 1" "1 x"; do
	out=$("$GPU" pool-create $bad 2>&1); rc=$?
	like "$rc $out" "^2 usage:" "phos-gpu pool-create $bad is a usage error"
done
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
	skip "this node has the NVIDIA driver"
else
	out=$(cd "$PD" && "$GPU" save 7 </dev/null 2>"$PD/gpu.err"); rc=$?
	like "$rc $out $(cat "$PD/gpu.err")" \
		"^1 direct phos-gpu: cannot load the NVIDIA driver \\(libcuda\\.so\\.1\\)" \
		"phos-gpu without the driver says so, exits 1, and answers 'direct' (what phosd reads first)"
fi
