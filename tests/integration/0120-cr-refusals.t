#!/bin/bash
# 0120-cr-refusals.t: a restore refuses a damaged or foreign image, each
# with its own message (truncated file, flipped byte, file of another
# owner, manifest changed without the key, unknown manifest version,
# missing generation, another user's image), a restore whose image
# check is killed before it answers fails and runs nothing, and an
# ordinary user (nobody) cannot checkpoint another user's process nor
# write into the image tree.  Real phosd and CRIU, no Slurm.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
# shellcheck source=lib-phosd.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-phosd.sh"
phosd_require
require_built tests/progs/cr_append
command -v setpriv >/dev/null || skip_all "setpriv (util-linux) not installed"
command -v openssl >/dev/null || skip_all "openssl not installed"
id nobody >/dev/null 2>&1 || skip_all "no user nobody"
plan 52

phosd_scratch
phosd_start n1
phosd_start n2

as_nobody() {
	setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$@"
}

# Six generations of one process (leave-running checkpoints).
f=$PD/append.txt
setsid "$PROGS/cr_append" "$f" 20 </dev/null >/dev/null 2>&1 &
apid=$!
disown
track "$apid"
wait_lines "$f" 3
fails=0
for _ in 1 2 3 4 5 6; do
	pc_out n1 checkpoint --leave-running --pid "$apid" || true
	[ "$RC" = 0 ] || { fails=$((fails + 1)); diag "$OUT"; }
done
ok $fails "six leave-running checkpoints of pid $apid"
task=$(image_dir root "$apid")
gen() { printf '%s/%06d' "$task" "$1"; }
ls -d "$(gen 6)" >/dev/null 2>&1
ok $? "generations 1..6 are in $task"

# refuse NUM ERE DESCRIPTION: `phosctl restore` of generation NUM on n2
# exits 1 with a message matching ERE; the message is kept in MSGS.
MSGS=()
refuse() {
	if [ "$1" = job ]; then
		pc_out n2 restore --detach --job 4242 --step 0 --task 0 --generation 99
	else
		pc_out n2 restore --detach "$(gen "$1")"
	fi
	is "$RC" 1 "$3: phosctl restore exits 1" || diag "$OUT"
	like "$OUT" "$2" "$3: the message says why"
	MSGS+=("$(grep -v '^phosctl: restoring' <<<"$OUT" | sed "s|$PD||g")")
	local p
	p=$(restored_pid "$OUT")
	[ -z "$p" ] || { track "$p"; kill -KILL "$p"; }
}

biggest() {
	find "$1" -maxdepth 1 -name 'pages-*.img' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2
}

# generation 1: a truncated file
p=$(biggest "$(gen 1)")
truncate -s -4096 "$p"
refuse 1 "pages-[0-9]+\\.img has [0-9]+ bytes but the manifest says" "truncated pages file"

# flip FILE: change byte 100 of FILE (its size stays)
flip() {
	local b
	b=$(od -An -tu1 -j 100 -N 1 "$1" | tr -d ' ')
	printf '%b' "\\0$(printf %03o $(((b + 1) % 256)))" | dd of="$1" bs=1 seek=100 conv=notrunc status=none
}

# generation 2: one flipped byte.  phosd checks the manifest only; the
# hash check runs while CRIU restores, and no restored task may run before
# it passed: a copy that ran would append a number the original already
# wrote to the file both write.
flip "$(biggest "$(gen 2)")"
refuse 2 "content does not match the manifest" "one flipped byte"
like "$OUT" "found while CRIU restored it: CRIU killed the restored tasks before they ran" \
	"one flipped byte: found by the check beside CRIU"
sleep 0.5
ok "$(awk 'NR > 1 && $1 != p + 1 { bad = 1 } { p = $1 } END { exit bad }' "$f" && echo 0 || echo 1)" \
	"no restored task of the refused generation ran (the file's numbers still go 0, 1, 2...)" ||
	diag "$(awk 'NR > 1 && $1 != p + 1 { print NR ": " p " then " $1 } { p = $1 }' "$f" | head -5)"
_copies() { [ "$(pgrep -fc "cr_append $f ")" = 1 ]; }
wait_for 10 _copies
ok $? "and none is left: only the original runs"

# generation 3: a file that belongs to someone else
chown nobody "$(gen 3)/core-$apid.img"
refuse 3 "owned by uid $(id -u nobody)" "a file owned by another user"

# generation 4: manifest changed without the key, then signed with it
sed -i 's/^version: 1$/version: 2/' "$(gen 4)/manifest.yaml"
refuse 4 "MAC of manifest.yaml does not match" "manifest changed without the node key"
sign "$(gen 4)"
refuse 4 "manifest format version '2' is not supported" "manifest of an unknown version (signed with the key)"

# a generation that does not exist: root's Slurm job 4242 has generation 1
# (a copy of generation 5, signed), not 99
rtask=$PD/images/root/4242/0/0
mkdir -p "$rtask"
chmod 0700 "$PD/images/root/4242" "$PD/images/root/4242/0" "$rtask"
cp -a "$(gen 5)" "$rtask/000001"
sed -i -e 's/^job: .*/job: 4242/' -e 's/^generation: .*/generation: 1/' "$rtask/000001/manifest.yaml"
sign "$rtask/000001"
refuse job "generation 99 does not exist" "missing generation"

# generation 2 of that job: generation 5 with a flipped byte, signed.  Only
# the hash check shows it; phosd picked it (no --generation) and goes on
# to generation 1
cp -a "$(gen 5)" "$rtask/000002"
sed -i -e 's/^job: .*/job: 4242/' -e 's/^generation: .*/generation: 2/' "$rtask/000002/manifest.yaml"
flip "$(biggest "$rtask/000002")"
sign "$rtask/000002"
pc_out n2 restore --detach --job 4242 --step 0 --task 0
ok $RC "job 4242 restores although its newest generation is corrupt" || diag "$OUT"
like "$OUT" "generation 2 failed its check \\(.*content does not match the manifest.*\\); trying the older ones" \
	"phosctl says generation 2 failed its check"
like "$OUT" "restored .*/4242/0/0/000001 as pid" "and that generation 1 was restored"
rp=$(restored_pid "$OUT")
[ -z "$rp" ] || { track "$rp"; kill -KILL "$rp"; }
like "$(cat "$PD/n2.log")" "generation 2 failed its check .*: trying the older ones" "phosd's log says so too"

# job 4243 has one generation, corrupt the same way: nothing to fall back to
t3=$PD/images/root/4243/0/0
mkdir -p "$t3"
chmod 0700 "$PD/images/root/4243" "$PD/images/root/4243/0" "$t3"
cp -a "$(gen 5)" "$t3/000001"
sed -i -e 's/^job: .*/job: 4243/' -e 's/^generation: .*/generation: 1/' "$t3/000001/manifest.yaml"
flip "$(biggest "$t3/000001")"
sign "$t3/000001"
wait_for 10 _copies	# the copy of job 4242 is gone
lines_before=$(wc -l <"$f")
pc_out n2 restore --detach --job 4243 --step 0 --task 0
is "$RC" 1 "job 4243, whose only generation is corrupt: phosctl restore exits 1" || diag "$OUT"
like "$OUT" "generation 1 failed its check \\(.*content does not match the manifest.*\\), and no older one is usable" \
	"the message says that generation 1 failed its check and nothing older is usable"
rp=$(restored_pid "$OUT")
[ -z "$rp" ] || { track "$rp"; kill -KILL "$rp"; }
sleep 0.5
ok "$(tail -n +"$lines_before" "$f" | awk 'NR > 1 && $1 != p + 1 { bad = 1 } { p = $1 } END { exit bad }' &&
	echo 0 || echo 1)" "no restored task of job 4243 ran (the numbers written since go on one by one)" ||
	diag "$(tail -n +"$lines_before" "$f" | head -20 | tr '\n' ' ')"

# someone else's image: root's generation 5 placed in nobody's tree as a
# Slurm job of nobody, properly signed, restored by nobody
ntask=$PD/images/nobody/4242/0/0
mkdir -p "$ntask"
chmod 0700 "$PD/images/nobody" "$PD/images/nobody/4242" "$PD/images/nobody/4242/0" "$ntask"
cp -a "$(gen 5)" "$ntask/000001"
sed -i -e 's/^job: .*/job: 4242/' -e 's/^generation: .*/generation: 1/' "$ntask/000001/manifest.yaml"
sign "$ntask/000001"
RC=0
OUT=$(as_nobody "$PHOSCTL" -s "$PD/n2.sock" restore --detach --job 4242 --step 0 --task 0 2>&1) || RC=$?
is "$RC" 1 "another user's image (owner root, in nobody's tree): nobody's restore exits 1" || diag "$OUT"
like "$OUT" "nobody/4242/0/0/000001: (the manifest describes another task|.*another user's image)" \
	"the message names the refused image"
MSGS+=("$OUT")

dups=$(printf '%s\n' "${MSGS[@]}" | sort | uniq -d)
ok "$([ ${#MSGS[@]} = 7 ] && [ -z "$dups" ] && echo 0 || echo 1)" "the 7 refusals have 7 different messages" ||
	diag "${MSGS[@]}"

# the list shows what a quick check can see: the truncated generation is
# invalid, the intact one valid
pc_out n2 list
like "$OUT" "pid-$apid +0 +0 +1 +no" "phosctl list marks the truncated generation invalid"
like "$OUT" "pid-$apid +0 +0 +6 +yes" "and generation 6 valid"

# control: the untouched generation 6 restores
kill -KILL "$apid"
pc_out n2 restore --detach "$(gen 6)"
ok $RC "the intact generation 6 restores on n2" || diag "$OUT"
rp=$(restored_pid "$OUT")
track "$rp"
ok "$(alive "$rp" && echo 0 || echo 1)" "and runs (pid $rp)"
kill -KILL "$rp" 2>/dev/null

# -- the image check dies before it answers (the checker is killed): the
# restore fails, no restored task runs, and the image restores on a retry
# (doc/concurrent-restore.md, "The image check beside CRIU").  1 GiB of
# memory gives the check a few hundred ms to be caught in.
fb=$PD/big.txt
start_big "$fb"
bpid=$BIG_PID
wait_lines "$fb" 5
pc_out n1 checkpoint --pid "$bpid"
[ "$RC" = 0 ] || diag "$OUT"
wait_for 10 _gone "$bpid"
bgen=$(ls -d "$(image_dir root "$bpid")"/0* | tail -1)
nb=$(wc -l <"$fb")
(pc_out n2 restore --detach "$bgen"; printf '%s\n%s\n' "$RC" "$OUT" >"$PD/checker-killed.out") &
rbg=$!
# only this restore's checker: a test running beside this one has its own
kill_checker() {
	local pr
	pr=$(pgrep -d, -f "^phos-restore --image $bgen ") || return 1
	pkill -KILL -x phos-check -P "$pr"
}
killed=1
for _ in $(seq 1000); do
	kill_checker && { killed=0; break; }
	[ -s "$PD/checker-killed.out" ] && break
	sleep 0.01
done
wait "$rbg"
if [ "$killed" = 0 ]; then
	is "$(head -1 "$PD/checker-killed.out")" 1 "the image check killed before it answered: phosctl restore exits 1" ||
		diag_file "$PD/checker-killed.out"
	like "$(cat "$PD/checker-killed.out")" "the image check died before it answered" "and says the check died"
	sleep 0.5
	is "$(wc -l <"$fb")" "$nb" "no restored task ran (its file did not grow)"
else
	skip "the image check had answered before it could be killed" 3
fi
pc_out n2 restore --detach "$bgen"
rp=$(restored_pid "$OUT")
[ -z "$rp" ] || track "$rp"
wait_lines "$fb" $((nb + 3))
ok "$( [ "$RC" = 0 ] && consecutive "$fb" >/dev/null && echo 0 || echo 1)" \
	"the same image restores afterwards, and its numbers go on without a gap or repeat" ||
	diag "$OUT" "$(consecutive "$fb")"
[ -z "$rp" ] || kill -KILL "$rp" 2>/dev/null

# -- an ordinary user -------------------------------------------------------------
setsid sleep 600 </dev/null >/dev/null 2>&1 &
spid=$!
disown
track "$spid"
RC=0
OUT=$(as_nobody "$PHOSCTL" -s "$PD/n1.sock" checkpoint --pid "$spid" 2>&1) || RC=$?
is "$RC" 1 "nobody cannot checkpoint root's process: exit 1" || diag "$OUT"
like "$OUT" "no process $spid of yours" "with a message that does not reveal the process"
ok "$(alive "$spid" && echo 0 || echo 1)" "root's process is untouched"
ok "$([ ! -e "$(image_dir root "$spid")" ] && echo 0 || echo 1)" "and no image of it was made"

RC=0
OUT=$(as_nobody "$PHOSCTL" -s "$PD/n1.sock" restore --detach "$(gen 6)" 2>&1) || RC=$?
is "$RC" 1 "nobody cannot restore root's generation 6: exit 1" || diag "$OUT"
like "$OUT" "Permission denied|another user's image" "with a message"

RC=0
OUT=$(as_nobody "$PHOSCTL" -s "$PD/n1.sock" list 2>&1) || RC=$?
unlike "$OUT" "pid-$apid" "nobody's phosctl list does not show root's images" || diag "$OUT"

# nobody checkpoints their own process (CRIU needs CAP_SYS_RESOURCE for
# another uid's process: some containers and VMs drop it from root)
setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
	setsid "$PROGS/cr_append" /dev/null 100 </dev/null >/dev/null 2>&1 &
npid=$!
disown
track "$npid"
_runs_as_nobody() { [ "$(stat -c %U "/proc/$npid")" = nobody ] && grep -q cr_append "/proc/$npid/cmdline"; }
wait_for 10 _runs_as_nobody
RC=0
OUT=$(as_nobody "$PHOSCTL" -s "$PD/n1.sock" checkpoint --leave-running --pid "$npid" 2>&1) || RC=$?
if [ "$RC" != 0 ] && grep -q "Can't get rlimit" <<<"$OUT"; then
	ok 0 "nobody's checkpoint of their own process fails only because CRIU lacks CAP_SYS_RESOURCE here"
	skip "CRIU cannot prlimit() another uid's process without CAP_SYS_RESOURCE" 2
else
	ok "$RC" "nobody checkpoints their own process" || diag "$OUT"
	ng=$(sed -n 's/.*written to \(\/[^ ]*\) (.*/\1/p' <<<"$OUT")
	like "$(cat "$ng/manifest.yaml" 2>/dev/null)" "uid: $(id -u nobody)$" "the image's owner is nobody"
	OUT=$(as_nobody "$PHOSCTL" -s "$PD/n1.sock" list 2>&1)
	like "$OUT" "^nobody +pid-$npid " "and nobody's phosctl list shows it"
fi
kill -KILL "$npid" 2>/dev/null

for t in "$PD/images/x" "$PD/images/root/x" "$ntask/x" "$(gen 6)/x"; do
	ok "$(! as_nobody touch "$t" 2>/dev/null && [ ! -e "$t" ] && echo 0 || echo 1)" \
		"nobody cannot create ${t#"$PD"/}"
done
ok "$(! as_nobody sh -c "echo x >> '$(gen 6)/manifest.yaml'" 2>/dev/null && echo 0 || echo 1)" \
	"nobody cannot write a manifest"
bad=$(find "$PD/images" \( ! -user root -o -perm /022 \) -print | grep -v "/000003/core-" || true)
ok "$([ -z "$bad" ] && echo 0 || echo 1)" "everything phosd wrote is root's and not group/other writable" || diag "$bad"

phosd_finish
done_testing
