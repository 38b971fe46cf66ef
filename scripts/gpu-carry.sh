#!/bin/bash
# gpu-carry.sh - fill .carry/ of this checkout with what a GPU machine
# without Slurm, munge or CRIU needs to run the GPU tests (tests/gpu/):
#
#   .carry/bin    phosd, phosctl, phos-restore, phos-gpu, libphos.so (from
#                 BUILDDIR), phos-counter (when built) and the system's criu
#   .carry/lib    the shared libraries they need (ldd), except those every
#                 Ubuntu 24.04 / Debian 12 machine has (see SURE below)
#   .carry/slurm  with --slurm: Debian's Slurm 22.05 daemons and clients,
#                 munged and its clients, the Slurm plugins the test cluster
#                 (tests/cluster/phos-cluster) loads and spank_phos.so:
#                 sbin/ bin/ plugins/ (their libraries go to .carry/lib)
#
# Every carried program and library gets a RUNPATH relative to itself
# ($ORIGIN/...) so that it finds the carried libraries without
# LD_LIBRARY_PATH, also where Slurm or CRIU start it with a clean
# environment.  Needs patchelf (scripts/install-deps.sh installs it).  .carry/ is
# ignored by git (.gitignore and .git/info/exclude).
#
# Run it here (Debian bookworm, scripts/install-deps.sh done) after building
# BUILDDIR; copy .carry/ with the checkout; see tests/gpu/README.md.
set -euo pipefail

PROG=${0##*/}
top=$(cd "$(dirname "$0")/.." && pwd -P)
CARRY=$top/.carry

usage() {
	cat <<EOF
Usage: $PROG [--slurm] BUILDDIR

Fill $CARRY/bin and $CARRY/lib with PhOS's programs from BUILDDIR (a
configured and built build tree), the system's criu and the libraries they
need; with --slurm also $CARRY/slurm with Debian's Slurm, munge, the
plugins the test cluster loads and BUILDDIR's spank_phos.so.  Prints the
size at the end.

Options:
  --slurm      carry Slurm and munge too (for tests/gpu/slurm.sh)
  --no-strip   do not strip the carried system programs and libraries
  -h, --help   show this help

Environment:
  CRIU         the criu binary to carry (default: criu on PATH, else
               /usr/local/sbin/criu)
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Libraries every target machine has (glibc, the compiler runtime, zlib):
# not carried.  OpenSSL's libcrypto is (4 MB, the machine surely has one,
# but an older Debian build works there and spares the doubt).  Never
# carried: the NVIDIA driver's libraries.
SURE='^(linux-vdso\.so|linux-gate\.so|ld-linux-x86-64\.so|libc\.so|libm\.so|libmvec\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so|libanl\.so|libnsl\.so\.1|libgcc_s\.so|libstdc\+\+\.so|libz\.so|libcuda\.so|libnvidia)'

# The Slurm plugins tests/cluster/phos-cluster's slurm.conf makes Slurm 22.05
# load (slurmctld, slurmd, slurmstepd, srun, sbatch, scontrol, sinfo,
# squeue, scancel; seen through the plugins' access times during the
# integration tests 0010, 0210 and 0220), plus cgroup_v2 (slurmd loads
# cgroup/v1 or cgroup/v2, whichever the machine has).  Not the PMIx ones:
# they need libpmix, and MpiDefault=none.
PLUGINS=(
	accounting_storage_none acct_gather_energy_none acct_gather_filesystem_none
	acct_gather_interconnect_none acct_gather_profile_none auth_munge
	cgroup_v1 cgroup_v2 core_spec_none cred_munge ext_sensors_none hash_k12
	job_container_none jobacct_gather_none jobcomp_none launch_slurm mcs_none
	mpi_none mpi_pmi2 mpi_cray_shasta preempt_partition_prio prep_script
	priority_basic proctrack_linuxproc route_default sched_backfill
	select_cons_res select_cons_tres select_linear select_cray_aries
	serializer_json serializer_url_encoded serializer_yaml
	switch_none switch_cray_aries task_none topology_none
)
SLURM_SBIN=(slurmctld slurmd slurmstepd)
SLURM_BIN=(srun sbatch scontrol squeue sinfo scancel sacct)
SLURM_PLUGINDIR=/usr/lib/x86_64-linux-gnu/slurm-wlm
# RUNPATHs, for the dynamic loader (not the shell) to expand
# shellcheck disable=SC2016
R_BIN='$ORIGIN/../lib' R_SLURM='$ORIGIN/../../lib' R_LIB='$ORIGIN'

WITH_SLURM=0
STRIP=1
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--slurm) WITH_SLURM=1; shift ;;
	--no-strip) STRIP=0; shift ;;
	--) shift; break ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || { usage >&2; exit 2; }
[ -d "$1" ] || die "build directory $1 does not exist"
B=$(cd "$1" && pwd -P)

command -v patchelf >/dev/null || die "patchelf not found (scripts/install-deps.sh installs it; or apt-get install patchelf)"
command -v ldd >/dev/null || die "ldd not found"
if [ "$STRIP" = 1 ]; then
	command -v strip >/dev/null || die "strip not found (apt-get install binutils, or --no-strip)"
fi

# ---- what goes where -------------------------------------------------------

# carried files: "SOURCE DEST RUNPATH STRIP" (RUNPATH '-': leave it alone)
ITEMS=()
add() { ITEMS+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"); }

for f in daemon/phosd daemon/phosctl daemon/phos-restore daemon/phos-gpu; do
	[ -x "$B/$f" ] || die "$B/$f not built (make -C $B)"
	add "$B/$f" "bin/${f##*/}" "$R_BIN" 0
done
[ -f "$B/preload/.libs/libphos.so" ] || die "$B/preload/.libs/libphos.so not built"
# libphos.so is preloaded into tasks and needs libc alone: no RUNPATH
add "$B/preload/.libs/libphos.so" bin/libphos.so - 0
if [ -x "$B/tests/progs/phos-counter" ]; then
	add "$B/tests/progs/phos-counter" bin/phos-counter "$R_BIN" 0
else
	log "note: $B/tests/progs/phos-counter not built (make -C $B/tests progs/phos-counter): NO_GPU=1 runs of tests/gpu/slurm.sh will build it"
fi
criu=${CRIU:-$(command -v criu || true)}
[ -n "$criu" ] || criu=/usr/local/sbin/criu
[ -x "$criu" ] || die "no criu (scripts/install-deps.sh installs CRIU 4.1.1)"
criu=$(readlink -f "$criu")
add "$criu" bin/criu "$R_BIN" "$STRIP"

if [ "$WITH_SLURM" = 1 ]; then
	for p in "${SLURM_SBIN[@]}" munged; do
		f=$(PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v "$p" || true)
		[ -n "$f" ] || die "$p not found (scripts/install-deps.sh installs Slurm and munge)"
		add "$(readlink -f "$f")" "slurm/sbin/$p" "$R_SLURM" "$STRIP"
	done
	for p in "${SLURM_BIN[@]}" munge unmunge; do
		f=$(PATH=/usr/bin:/bin:/usr/sbin:/sbin command -v "$p" || true)
		[ -n "$f" ] || die "$p not found (scripts/install-deps.sh installs Slurm and munge)"
		add "$(readlink -f "$f")" "slurm/bin/$p" "$R_SLURM" "$STRIP"
	done
	for p in "${PLUGINS[@]}"; do
		f=$SLURM_PLUGINDIR/$p.so
		[ -f "$f" ] || die "$f does not exist (is Slurm 22.05 of Debian bookworm installed?)"
		add "$(readlink -f "$f")" "slurm/plugins/$p.so" "$R_SLURM" "$STRIP"
	done
	[ -f "$B/spank/.libs/spank_phos.so" ] || die "$B/spank/.libs/spank_phos.so not built"
	add "$B/spank/.libs/spank_phos.so" slurm/plugins/spank_phos.so - 0
fi

# ---- copy -----------------------------------------------------------------

# the parts this script owns are rebuilt from scratch; other things under
# .carry (a gpubin/ of prebuilt test apps, say) stay
rm -rf "${CARRY:?}/bin" "${CARRY:?}/lib" "${CARRY:?}/slurm"
mkdir -p "$CARRY/bin" "$CARRY/lib"

# .carry must never be committed: .gitignore has it, and so does the
# clone's own exclude file (also for checkouts whose .gitignore lacks it)
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	excl=$(git -C "$top" rev-parse --git-path info/exclude)
	case $excl in /*) ;; *) excl=$top/$excl ;; esac
	mkdir -p "$(dirname "$excl")"
	touch "$excl"
	grep -qx '/.carry/' "$excl" || echo '/.carry/' >>"$excl"
fi

# place SRC DEST RUNPATH STRIP
place() {
	local src=$1 dest=$CARRY/$2 rpath=$3 st=$4
	mkdir -p "$(dirname "$dest")"
	cp -L "$src" "$dest"
	chmod u+w "$dest"
	if [ "$st" = 1 ]; then
		case $dest in
		*.so | *.so.*) strip --strip-unneeded "$dest" 2>/dev/null || true ;;
		*) strip "$dest" 2>/dev/null || true ;;
		esac
	fi
	if [ "$rpath" != - ]; then
		patchelf --set-rpath "$rpath" "$dest" || die "patchelf --set-rpath on $dest failed"
	fi
}

declare -A LIBS=()	# soname -> path, over everything carried
declare -A SKIPPED=()	# sonames left to the target machine
for it in "${ITEMS[@]}"; do
	IFS=$'\t' read -r src dest rpath st <<<"$it"
	place "$src" "$dest" "$rpath" "$st"
	# ldd lists the whole closure; "=> not found" is fatal here, where
	# everything is installed
	while read -r name arrow path _; do
		[ "$arrow" = "=>" ] || { [[ $name == /* ]] || continue; path=$name; name=${name##*/}; }
		if [ "$path" = not ]; then
			die "ldd $src: $name not found"
		fi
		if [[ $name =~ $SURE ]]; then
			SKIPPED[$name]=1
			continue
		fi
		LIBS[$name]=$path
	done < <(ldd "$src" 2>/dev/null)
done
for name in "${!LIBS[@]}"; do
	place "${LIBS[$name]}" "lib/$name" "$R_LIB" "$STRIP"
done

# the paths compiled into this build that the GPU machine will not have:
# the test scripts point the programs at the carried files instead
{
	echo "# written by $PROG from $B on $(date -u +%FT%TZ)"
	echo "criu_default=$(sed -n 's/^#define PHOS_CRIU_BIN "\(.*\)"$/\1/p' "$B/config.h")"
	echo "criu_version=$("$CARRY/bin/criu" --version 2>/dev/null | sed -n 's/^Version: *//p')"
	if [ "$WITH_SLURM" = 1 ]; then
		# (the clients' --version wants a configuration)
		echo "slurm_version=$(dpkg-query -W -f '${Version}' slurm-client 2>/dev/null || echo unknown)"
	fi
	echo "not_carried=$(printf '%s\n' "${!SKIPPED[@]}" | sort | tr '\n' ' ')"
} >"$CARRY/manifest"

# every carried program must load with the carried libraries alone (plus
# the SURE ones): ldd with a clean environment shows no system copy of a
# carried library and nothing missing
bad=0
while IFS= read -r f; do
	case $f in *libphos.so | *spank_phos.so) continue ;; esac
	out=$(env -i ldd "$f" 2>&1) || { log "ldd $f failed: $out"; bad=1; continue; }
	if grep -q 'not found' <<<"$out"; then
		log "$f: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
		bad=1
	fi
	while read -r name _ path _; do
		if [ -z "$name" ] || [ -z "${LIBS[$name]:-}" ]; then continue; fi
		path=$(readlink -f "$path")
		case $path in "$CARRY"/lib/*) ;; *) log "$f: $name resolves to $path, not the carried copy"; bad=1 ;; esac
	done <<<"$out"
done < <(find "$CARRY/bin" "$CARRY/lib" "$CARRY/slurm" -type f 2>/dev/null)
[ "$bad" = 0 ] || die "some carried files do not resolve to the carried libraries"

log "carried: $(find "$CARRY/bin" -type f | wc -l) programs, $(find "$CARRY/lib" -type f | wc -l) libraries$(
	[ "$WITH_SLURM" = 1 ] && echo ", Slurm $(sed -n 's/^slurm_version=//p' "$CARRY/manifest") ($(find "$CARRY/slurm" -type f | wc -l) files)")"
log "left to the target machine: $(sed -n 's/^not_carried=//p' "$CARRY/manifest")"
du -sh "$CARRY"
