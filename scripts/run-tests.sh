#!/bin/bash
# run-tests.sh - the project's test command (README, .ci/run).
#
# As root on Debian bookworm, from a fresh clone: installs the dependencies,
# generates the build system, configures in ./build with --enable-sanitizer,
# builds, runs `make check` with the integration tests against a private
# local Slurm cluster (PHOS_INTEGRATION=1), then `make distcheck` (unit tests
# only).  Prints test-suite.log of every failing directory; exits non-zero
# on any failure; the last line is a one-line summary.
#
# Environment: PHOS_BUILD_DIR (default ./build), PHOS_SKIP_DEPS=1 (skip
# install-deps.sh), PHOS_SKIP_DISTCHECK=1.
set -uo pipefail

# shellcheck source=lib-build.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib-build.sh"

START=$SECONDS
STAGES=()

finish() {
	local rc=$1 what=$2
	local t=$((SECONDS - START))
	if [ "$rc" = 0 ]; then
		printf '\nrun-tests: PASS (%s) in %dm%02ds\n' "${STAGES[*]}" $((t / 60)) $((t % 60))
	else
		printf '\nrun-tests: FAIL at %s (passed: %s) after %dm%02ds\n' "$what" "${STAGES[*]:-none}" $((t / 60)) $((t % 60))
	fi
	exit "$rc"
}

# Print test-suite.log of every directory with failing tests.
show_failures() {
	local f
	while IFS= read -r f; do
		if grep -qE '^# (FAIL|ERROR|XPASS): +[1-9]' "$f"; then
			printf '\n======== %s ========\n' "$f"
			cat "$f"
		fi
	done < <(find "$1" -name test-suite.log 2>/dev/null | sort)
	# Last, so that it ends the output: each failed result with the
	# diagnostics right after it.
	printf '\n======== failed results and their diagnostics ========\n'
	while IFS= read -r f; do
		awk -v t="${f#"$1"/}" '
			/^not ok/ { n = 0; print t ": " $0; show = 1; next }
			/^(ok|not ok) / { show = 0 }
			show && /^#/ && n++ < 30 { print "  " $0 }' "$f"
	done < <(find "$1" -name '*.log' ! -name test-suite.log ! -name config.log 2>/dev/null |
		 xargs -r grep -l '^not ok' | sort)
}

need_root
if [ "${PHOS_SKIP_DEPS:-0}" != 1 ]; then
	install_deps || finish 1 install-deps
	STAGES+=(deps)
fi
bootstrap always || finish 1 bootstrap
configure_build || finish 1 configure
build || finish 1 build
STAGES+=(build)

say "Running the tests (make check, PHOS_INTEGRATION=1)"
if ! PHOS_INTEGRATION=1 make -C "$BUILD_DIR" -j"$JOBS" check; then
	show_failures "$BUILD_DIR"
	finish 1 "make check"
fi
STAGES+=(check)

if [ "${PHOS_SKIP_DISTCHECK:-0}" != 1 ]; then
	say "Checking the distribution (make distcheck, unit tests only)"
	if ! env -u PHOS_INTEGRATION make -C "$BUILD_DIR" -j"$JOBS" distcheck; then
		# distcheck builds in BUILD_DIR/phos-slurm-*/_build
		show_failures "$BUILD_DIR"
		finish 1 "make distcheck"
	fi
	STAGES+=(distcheck)
fi
finish 0 ""
