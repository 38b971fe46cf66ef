#!/bin/bash
# install-deps.sh - install everything PhOS for Slurm needs on Debian bookworm.
#
# Uses Debian's package archive only.  When the system's criu is older than
# 4.1 (bookworm ships 3.17, which fails on kernels >= 6.13), fetches the
# CRIU 4.1.1 source from Debian trixie (deb-src only: no trixie binaries),
# verifies the tarball's SHA-256 against the signed Sources index, builds it
# and installs it (criu, libcriu, criu.h, criu.pc) under /usr/local.
#
# Idempotent: running it again is quick and changes nothing.
set -euo pipefail

CRIU_VERSION=4.1.1
CRIU_MIN=4.1
PREFIX=/usr/local
BUILD_ROOT=${PHOS_DEPS_BUILD:-/var/cache/phos-deps}

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages)"
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || log "warning: tested on Debian bookworm, this is ${PRETTY_NAME:-unknown}"

export DEBIAN_FRONTEND=noninteractive

PKGS=(
	# build
	build-essential autoconf automake libtool pkg-config git
	# project libraries
	libyaml-dev libcmocka-dev libmunge-dev munge
	libslurm-dev slurm-wlm slurmctld slurmd slurm-client
	libssl-dev libzstd-dev
	# tests
	python3 valgrind procps psmisc iproute2 nfs-kernel-server zstd
	# CRIU build dependencies
	libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
	python3-protobuf libnl-3-dev libnl-route-3-dev libcap-dev libnet1-dev
	libbsd-dev libaio-dev libgnutls28-dev uuid-dev libnftables-dev
	libdrm-dev gnutls-bin iptables python3-yaml
	dpkg-dev xz-utils
	# scripts/gpu-carry.sh (the build carried to a GPU machine)
	patchelf
)

missing=()
for p in "${PKGS[@]}"; do
	grep -q 'install ok installed' <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${#missing[@]} packages: ${missing[*]}"
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's packages enable and start these; our tests run private instances.
for s in slurmctld slurmd munge; do
	systemctl disable --now "$s" >/dev/null 2>&1 || true
done

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

criu_version() {
	local v
	v=$("$1" --version 2>/dev/null | sed -n 's/^Version: *//p')
	echo "${v:-0}"
}

have=0
for c in "$PREFIX/sbin/criu" /usr/sbin/criu "$(command -v criu || true)"; do
	[ -n "$c" ] && [ -x "$c" ] || continue
	v=$(criu_version "$c")
	if version_ge "$v" "$CRIU_MIN" && pkg-config --exists criu 2>/dev/null; then
		log "criu $v at $c (>= $CRIU_MIN) with libcriu: nothing to build"
		have=1; break
	fi
done

if [ $have = 0 ]; then
	log "building CRIU $CRIU_VERSION from Debian trixie's source package"
	src=/etc/apt/sources.list.d/phos-trixie-src.sources
	if [ ! -f "$src" ]; then
		cat > "$src" <<-'SRC'
		# Added by PhOS install-deps.sh: trixie *source* packages only, for CRIU.
		Types: deb-src
		URIs: http://deb.debian.org/debian
		Suites: trixie
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
		SRC
	fi
	apt-get update -q
	mkdir -p "$BUILD_ROOT"
	cd "$BUILD_ROOT"
	# The .dsc and debian tarball may 404; the orig tarball arrives.
	tarball=$(ls criu_${CRIU_VERSION}.orig.tar.* 2>/dev/null | head -1 || true)
	if [ -z "$tarball" ]; then
		apt-get source --download-only "criu/trixie" || true
		tarball=$(ls criu_${CRIU_VERSION}.orig.tar.* 2>/dev/null | head -1 || true)
	fi
	[ -n "$tarball" ] || die "apt-get source did not fetch criu_${CRIU_VERSION}.orig.tar.*; check the trixie deb-src entry in $src"
	# Verify against the Sources index apt verified with the archive key.
	idx=$(ls /var/lib/apt/lists/*_dists_trixie_main_source_Sources* 2>/dev/null | head -1)
	[ -n "$idx" ] || die "no trixie Sources index in /var/lib/apt/lists"
	case "$idx" in
	*.lz4) cat_idx="lz4cat" ;; *.xz) cat_idx="xzcat" ;; *.gz) cat_idx="zcat" ;; *) cat_idx="cat" ;;
	esac
	want=$($cat_idx "$idx" | awk -v f="$tarball" '
		/^Package: /{pkg=$2} pkg=="criu" && /^Checksums-Sha256:/{s=1; next}
		s && /^ /{ if ($3==f) print $1; next } {s=0}' | head -1)
	[ -n "$want" ] || die "$tarball not listed in $idx"
	got=$(sha256sum "$tarball" | cut -d' ' -f1)
	[ "$want" = "$got" ] || die "checksum mismatch for $tarball: index says $want, file is $got"
	log "sha256 $got verified against the trixie Sources index"
	rm -rf "criu-$CRIU_VERSION"
	tar xf "$tarball"
	cd "criu-$CRIU_VERSION"
	make -j"$(nproc)" PREFIX="$PREFIX" criu lib >build.log 2>&1 || { tail -40 build.log; die "CRIU build failed (log: $PWD/build.log)"; }
	make PREFIX="$PREFIX" SKIP_PIP_INSTALL=1 install-criu install-lib >>build.log 2>&1 || { tail -40 build.log; die "CRIU install failed"; }
	ldconfig
	log "installed $("$PREFIX/sbin/criu" --version | head -1)"
fi

ldconfig
# (grep reads a saved copy: with pipefail, grep -q leaving early would fail
# the pipeline with ldconfig's SIGPIPE)
grep -q 'libcriu\.so\.2' <<<"$(ldconfig -p)" || die "libcriu.so.2 is installed but not in the loader cache: check /etc/ld.so.conf.d"
"$PREFIX/sbin/criu" check >/dev/null 2>&1 || log "warning: 'criu check' reports problems: run '$PREFIX/sbin/criu check' for details"
log "done"
