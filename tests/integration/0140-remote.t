#!/bin/bash
# 0140-remote.t: requests from "another node" over TCP, authenticated by
# munge (phos.yaml listen + munge_socket, phosctl -H/-m), against a real
# private munged:
# - phosd learns the requester's uid from the credential (root: all jobs,
#   nobody: own jobs only), for status, list and a checkpoint + restore;
# - a request without a credential, one made with another munge key and a
#   replayed credential are refused with their reason;
# - nobody cannot act on root's process remotely either.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
# shellcheck source=lib-phosd.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-phosd.sh"
phosd_require
command -v munged >/dev/null || skip_all "munged not installed"
command -v setpriv >/dev/null || skip_all "setpriv (util-linux) not installed"
command -v python3 >/dev/null || skip_all "python3 not installed"
plan 13

phosd_scratch

# A private munged (and a second one with another key, "another realm").
start_munged() {
	local d=$PD/munge-$1
	mkdir -p "$d"
	head -c 1024 /dev/urandom >"$d/key"
	chmod 0600 "$d/key"
	munged --force --socket="$d/sock" --key-file="$d/key" --pid-file="$d/pid" \
		--log-file="$d/log" --seed-file="$d/seed" || bail_out "munged $1 did not start"
	chmod 0755 "$d"
	track "$(cat "$d/pid")"
}
start_munged a
start_munged b
MS=$PD/munge-a/sock

# A free port on the loopback.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
phosd_start n1 "listen: \"127.0.0.1:$PORT\"" "munge_socket: $MS"
like "$(cat "$PD/n1.log")" "accepting munge-authenticated requests on 127.0.0.1:$PORT" \
	"phosd listens on TCP"

R() { timeout 60 "$PHOSCTL" -H "127.0.0.1:$PORT" -m "$MS" "$@"; }
AS_NOBODY=(setpriv --reuid=nobody --regid=nogroup --clear-groups)

out=$(R status 2>&1)
like "$out" "uid 0 \(privileged: all jobs\)" "root is root remotely"
out=$("${AS_NOBODY[@]}" "$PHOSCTL" -H "127.0.0.1:$PORT" -m "$MS" status 2>&1)
like "$out" "uid 65534 \(your own jobs only\)" "nobody's uid comes from the credential"

# A checkpoint and a restore requested remotely.
setsid sleep 600 </dev/null >/dev/null 2>&1 &
tp=$!
disown
track "$tp"
out=$(R checkpoint --pid "$tp" --leave-running 2>&1)
like "$out" "checkpoint generation 1 written" "remote checkpoint (leave-running)"
out=$(R list 2>&1)
like "$out" "pid-$tp .* yes " "remote list shows the generation"
out=$(R restore "$(image_dir root "$tp")/000001" 2>&1)
like "$out" "add --detach" "remote restore without --detach is refused before sending"

# nobody cannot checkpoint root's process remotely.
rc=0
out=$("${AS_NOBODY[@]}" "$PHOSCTL" -H "127.0.0.1:$PORT" -m "$MS" checkpoint --pid "$tp" 2>&1) || rc=$?
is "$rc" 1 "nobody's remote checkpoint of root's process fails"
like "$out" "no process $tp of yours" "... with the local message"

# Bad credentials.
rc=0
out=$(timeout 60 "$PHOSCTL" -H "127.0.0.1:$PORT" -m "$PD/munge-b/sock" status 2>&1) || rc=$?
is "$rc" 1 "a credential of another munge key is refused"
like "$out" "munge credential refused" "... and says why"

# A raw request without a credential, and a replayed credential.
out=$(python3 - "$PORT" "$MS" <<'PY'
import socket, struct, subprocess, sys
port, ms = int(sys.argv[1]), sys.argv[2]
def frame(t, attrs):
    p = b"".join(struct.pack("<HHI", tag, 0, len(v)) + v for tag, v in attrs)
    return struct.pack("<IHHII", 0x534f4850, 1, t, len(p), 7) + p
def ask(data):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(data)
    buf = b""
    while True:
        c = s.recv(65536)
        if not c: break
        buf += c
        if len(buf) >= 16 and len(buf) >= 16 + struct.unpack("<I", buf[8:12])[0]: break
    s.close()
    i, out = 16, []
    while i < len(buf):
        tag, _, l = struct.unpack("<HHI", buf[i:i+8]); out.append((tag, buf[i+8:i+8+l])); i += 8 + l
    return dict(out)
r = ask(frame(10, []))                       # STATUS with no credential
print("nocred:", r.get(2, b"").decode())
cred = subprocess.run(["munge", "-S", ms, "-n"], capture_output=True, text=True).stdout.strip()
r1 = ask(frame(10, [(21, cred.encode())]))
r2 = ask(frame(10, [(21, cred.encode())]))
print("first:", struct.unpack("<Q", r1[1])[0] if 1 in r1 else "?")
print("replay:", r2.get(2, b"").decode())
PY
)
like "$out" "nocred: remote requests must carry a munge credential" "no credential: refused"
like "$out" "replay: munge credential refused: .*[Rr]eplayed" "a replayed credential is refused"

phosd_finish
done_testing
