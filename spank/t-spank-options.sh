#!/bin/bash
# t-spank-options.sh - spank_phos.so inside the real srun/sbatch/salloc,
# without any Slurm daemon: option listing, option value checks, and the
# plugstack.conf argument checks.  Needs the Slurm client commands (skips
# with 77 otherwise) and PHOS_SPANK_SO (set by spank/Makefile.am).
set -u

so=${PHOS_SPANK_SO:-.libs/spank_phos.so}
for c in srun sbatch salloc; do
	command -v "$c" >/dev/null || { echo "SKIP: $c not installed"; exit 77; }
done
[ -f "$so" ] || { echo "FAIL: $so not built"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/slurm.conf" <<EOF
ClusterName=phosspank
SlurmctldHost=localhost
SlurmctldPort=1
PlugStackConfig=$tmp/plugstack.conf
NodeName=n1 CPUs=1 State=UNKNOWN
PartitionName=p Nodes=n1 Default=YES
EOF
export SLURM_CONF=$tmp/slurm.conf

fails=0
n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }

plugstack() { echo "required $so $*" >"$tmp/plugstack.conf"; }

# expect_rc RC DESCRIPTION PATTERN CMD... : CMD exits RC and its output matches PATTERN
expect() {
	local rc=$1 desc=$2 pat=$3 out got
	shift 3
	out=$("$@" 2>&1 </dev/null)
	got=$?
	if [ "$got" -eq "$rc" ] && grep -qE -- "$pat" <<<"$out"; then
		ok "$desc"
	else
		not_ok "$desc (rc $got, wanted $rc; output:)"
		sed 's/^/#   /' <<<"$out" | head -20
	fi
}

lacks() {
	local desc=$1 pat=$2 out
	shift 2
	out=$("$@" 2>&1 </dev/null)
	if grep -qE -- "$pat" <<<"$out"; then
		not_ok "$desc"
	else
		ok "$desc"
	fi
}

plugstack "libphos=/opt/phos/lib/libphos.so socket=/run/phos/%n.sock enabled=1"
expect 0 "srun --help lists --phos-checkpoint" '--phos-checkpoint +Checkpoint' srun --help
lacks "srun --help does not list --phos-checkpoint-interval" 'phos-checkpoint-interval' srun --help
expect 0 "sbatch --help lists --phos-checkpoint" '--phos-checkpoint +Checkpoint' sbatch --help
expect 0 "sbatch --help lists --phos-checkpoint-interval=TIME" '--phos-checkpoint-interval=TIME' sbatch --help
expect 0 "salloc --help lists --phos-checkpoint-interval=TIME" '--phos-checkpoint-interval=TIME' salloc --help

# Option values.  Each command also carries --nodes=abc after the option,
# so it never gets to the (absent) controller: a good value ends at the
# node count error, a bad one at ours.  sbatch runs plugin callbacks for
# #SBATCH lines before it checks those, so the values go in a script.
job() { printf '#!/bin/sh\n#SBATCH --phos-checkpoint-interval=%s\n#SBATCH --nodes=abc\ntrue\n' "$1" >"$tmp/job.sh"; }
form="phos: --phos-checkpoint-interval=.*expected minutes as an integer, or an integer with suffix s, m or h \(e.g. 30s, 10m, 2h\), between 5s and 7 days"
for v in 5s 30s 10m 2h 10 1 10080 168h 604800s; do
	job "$v"
	expect 255 "sbatch accepts --phos-checkpoint-interval=$v" '^sbatch: error: "abc" is not a valid node count$' \
		sbatch "$tmp/job.sh"
	expect 255 "salloc accepts --phos-checkpoint-interval=$v" '^salloc: error: "abc" is not a valid node count$' \
		salloc --phos-checkpoint-interval="$v" --nodes=abc true
done
for v in 4s 0 0m 10081 169h 604801s abc 10x 1.5h -5 +5 ' 5' 5ss 99999999999999999999 ''; do
	job "$v"
	expect 255 "sbatch rejects --phos-checkpoint-interval='$v'" "$form" sbatch "$tmp/job.sh"
	expect 255 "salloc rejects --phos-checkpoint-interval='$v'" "$form" \
		salloc --phos-checkpoint-interval="$v" --nodes=abc true
done
lacks "a good value prints no phos error" 'phos:' salloc --phos-checkpoint-interval=5m --nodes=abc true
expect 255 "options given twice are fine" '^salloc: error: "abc" is not a valid node count$' \
	salloc --phos-checkpoint --phos-checkpoint --phos-checkpoint-interval=5m --phos-checkpoint-interval=6m --nodes=abc true
expect 255 "--phos-checkpoint takes no value" "option '--phos-checkpoint' doesn't allow an argument" \
	salloc --phos-checkpoint=1 --nodes=abc true

# plugstack.conf arguments
plugstack "sockt=/run/x.sock"
expect 1 "unknown argument fails srun, named with the valid keys" \
	"phos: plugstack.conf: unknown argument 'sockt' \(valid: libphos=PATH, socket=PATH, restore_helper=PATH, config=PATH, enabled=0\|1\)" srun --help
expect 1 "unknown argument fails sbatch too" "unknown argument 'sockt'" sbatch --help
plugstack "enabled"
expect 1 "a key without a value fails" "phos: plugstack.conf: 'enabled' needs a value" srun --help
plugstack "enabled=yes"
expect 1 "enabled=yes fails" 'phos: plugstack.conf: enabled=yes: expected 0 or 1' srun --help
plugstack "libphos=libphos.so"
expect 1 "relative libphos fails" 'phos: plugstack.conf: libphos=libphos.so: expected an absolute path' srun --help
plugstack "libphos=/a/libphos.so:/b/x.so"
expect 1 "libphos with ':' fails" "may not contain ':'" srun --help
plugstack "socket=/run/%h.sock"
expect 1 "socket with %h fails" 'only %n \(node name\) and %% may follow' srun --help
plugstack "restore_helper=phos-restore"
expect 1 "relative restore_helper fails" 'phos: plugstack.conf: restore_helper=phos-restore: expected an absolute path' srun --help
plugstack "restore_helper=/usr/libexec/phos/phos-restore"
expect 0 "an absolute restore_helper is accepted" '--phos-checkpoint +Checkpoint' srun --help
plugstack "config=phos.yaml"
expect 1 "relative config fails" 'phos: plugstack.conf: config=phos.yaml: expected an absolute path' srun --help
plugstack "config=/etc/phos/%h.yaml"
expect 1 "config with %h fails" 'config=/etc/phos/%h.yaml: only %n \(node name\) and %% may follow' srun --help
plugstack "config=/etc/phos/%n.yaml"
expect 0 "config with %n is accepted" '--phos-checkpoint +Checkpoint' srun --help
plugstack "socket=/run/a.sock socket=/run/b.sock"
expect 1 "a key given twice fails" "'socket' given twice" srun --help
plugstack "enabled=0"
expect 0 "enabled=0 still lists the options" '--phos-checkpoint +Checkpoint' srun --help
plugstack ""
expect 0 "no arguments: defaults" '--phos-checkpoint +Checkpoint' srun --help

echo "1..$n"
[ "$fails" -eq 0 ]
