# lib-build.sh - shared steps of scripts/run-tests.sh and scripts/demo.sh:
# install dependencies, generate the build system, configure out of tree,
# build.  Source it from bash; it defines functions and these variables:
#   SRC_DIR    the source tree (this file's parent's parent)
#   BUILD_DIR  the build tree (default SRC_DIR/build; env PHOS_BUILD_DIR)
#
# shellcheck shell=bash

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD_DIR=${PHOS_BUILD_DIR:-$SRC_DIR/build}
CONFIGURE_FLAGS=(--enable-sanitizer)
JOBS=$(nproc 2>/dev/null || echo 2)
STEP_LOG_DIR=${STEP_LOG_DIR:-}

say() {
	if [ -t 1 ]; then
		printf '\n\033[1m==> %s\033[0m\n' "$*"
	else
		printf '\n==> %s\n' "$*"
	fi
}
warn() { printf '%s: warning: %s\n' "${0##*/}" "$*" >&2; }
fail() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# step LOGNAME CMD...: run CMD; with STEP_LOG_DIR set its output goes to
# STEP_LOG_DIR/LOGNAME.log and the tail is shown when it fails.
step() {
	local name=$1 rc=0
	shift
	if [ -n "$STEP_LOG_DIR" ]; then
		mkdir -p "$STEP_LOG_DIR"
		"$@" >"$STEP_LOG_DIR/$name.log" 2>&1 || rc=$?
		if [ $rc != 0 ]; then
			printf '%s: %s failed (exit %d); last lines of %s:\n' "${0##*/}" "$name" $rc "$STEP_LOG_DIR/$name.log" >&2
			tail -n 40 "$STEP_LOG_DIR/$name.log" >&2
		fi
	else
		"$@" || rc=$?
	fi
	return $rc
}

need_root() {
	[ "$(id -u)" = 0 ] || fail "run as root: it installs packages and starts Slurm daemons"
}

install_deps() {
	say "Installing dependencies (scripts/install-deps.sh)"
	step install-deps "$SRC_DIR/scripts/install-deps.sh"
}

# bootstrap always|if-needed: autoreconf; if-needed: only when configure is
# missing or older than configure.ac.
bootstrap() {
	if [ "${1:-}" = always ] || [ ! -x "$SRC_DIR/configure" ] ||
		[ "$SRC_DIR/configure.ac" -nt "$SRC_DIR/configure" ]; then
		say "Generating the build system (./bootstrap)"
		(cd "$SRC_DIR" && step bootstrap ./bootstrap)
	fi
}

# configure_build: configure BUILD_DIR unless it is already configured with
# the same flags.
configure_build() {
	local want
	want="$SRC_DIR/configure ${CONFIGURE_FLAGS[*]}"
	mkdir -p "$BUILD_DIR"
	if [ -x "$BUILD_DIR/config.status" ] &&
		[ "$(cat "$BUILD_DIR/.phos-configured" 2>/dev/null)" = "$want" ] &&
		[ ! "$SRC_DIR/configure" -nt "$BUILD_DIR/config.status" ]; then
		return 0
	fi
	say "Configuring in $BUILD_DIR (${CONFIGURE_FLAGS[*]})"
	(cd "$BUILD_DIR" && step configure "$SRC_DIR/configure" "${CONFIGURE_FLAGS[@]}") || return 1
	echo "$want" >"$BUILD_DIR/.phos-configured"
}

build() {
	say "Building (make -j$JOBS)"
	step make make -C "$BUILD_DIR" -j"$JOBS"
}
