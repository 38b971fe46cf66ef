#!/bin/bash
# shellcheck disable=SC2119 # cluster_start takes no args here
# 0030-phosd.t: phosd on the test cluster's nodes: phosctl reaches each node's
# daemon over its socket; phosd refuses a phos.yaml with an unknown key,
# naming the key and its line.
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
require_integration
require_built daemon/phosd daemon/phosctl
plan 11

phosd=$top_builddir/daemon/phosd
phosctl=$top_builddir/daemon/phosctl

# -- configuration errors (no cluster needed) ---------------------------------
scratch=$(mktemp -d "${PHOS_TEST_TMPDIR:-/tmp}/phos-it-0030.XXXXXX")
cat >"$scratch/phos.yaml" <<YAML
socket: $scratch/phosd.sock
state_dir: $scratch/state
checkpoint_dir: $scratch/images
bogus_key: 1
log_target: stderr
YAML
rc=0
out=$(timeout 20 "$phosd" -f -c "$scratch/phos.yaml" 2>&1) || rc=$?
ok "$([ $rc != 0 ] && [ $rc != 124 ] && echo 0 || echo 1)" "phosd with an unknown key in phos.yaml exits non-zero" ||
	diag "exit $rc" "$out"
like "$out" "phos\\.yaml:4:.*bogus_key" "its message names the key and line 4"
ok "$([ ! -e "$scratch/phosd.sock" ] && echo 0 || echo 1)" "and it created no socket"

rc=0
out=$(timeout 20 "$phosctl" -s "$scratch/none.sock" status 2>&1) || rc=$?
ok "$([ $rc != 0 ] && echo 0 || echo 1)" "phosctl status without a phosd fails" || diag "$out"
like "$out" "none\\.sock" "and names the socket it tried"
rc=0
out=$("$phosctl" -s "$scratch/none.sock" checkpoint --help 2>&1) || rc=$?
like "$rc $out" "^0 Usage: phosctl" "phosctl COMMAND --help prints the usage and exits 0"
rc=0
out=$("$phosctl" -s "$scratch/none.sock" checkpoint --pid 1 --bogus 2>&1) || rc=$?
like "$rc $(tr '\n' ' ' <<<"$out")" "^2 .*'--bogus'.* Try 'phosctl --help'" \
	"an unknown option of a command exits 2 and says where the help is"
rm -rf "$scratch"

# -- phosd on the cluster's nodes ----------------------------------------------
cluster_start

for n in n1 n2; do
	rc=0
	out=$(timeout 20 "$phosctl" -s "$CLUSTER/phosd.$n.sock" status 2>&1) || rc=$?
	ok $rc "phosctl -s phosd.$n.sock status answers" || { diag "$out"; diag_file "$CLUSTER/phosd.$n.log"; }
done
like "$out" "$CLUSTER/phos\\.n2\\.yaml" "phosd on n2 runs with n2's configuration"
like "$out" "$CLUSTER/images" "and the shared checkpoint_dir"

done_testing
