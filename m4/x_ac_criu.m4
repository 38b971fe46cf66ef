# X_AC_CRIU: libcriu (criu.h, criu.pc) and a criu binary >= 4.1.
AC_DEFUN([X_AC_CRIU], [
	PKG_CHECK_MODULES([CRIU], [criu], [],
		[AC_MSG_ERROR([libcriu not found: run scripts/install-deps.sh (builds CRIU 4.1.1)])])
	AC_PATH_PROG([CRIU_BIN], [criu], [], [/usr/local/sbin:/usr/sbin:/sbin:$PATH])
	AS_IF([test -z "$CRIU_BIN"],
		[AC_MSG_ERROR([criu binary not found: run scripts/install-deps.sh])])
	CRIU_VERSION_STR=$("$CRIU_BIN" --version 2>/dev/null | sed -n 's/^Version: *//p')
	AC_MSG_CHECKING([whether criu $CRIU_VERSION_STR >= 4.1])
	AS_VERSION_COMPARE([$CRIU_VERSION_STR], [4.1], [AC_MSG_RESULT([no])
		AC_MSG_ERROR([criu $CRIU_VERSION_STR is older than 4.1 (it fails on kernels >= 6.13): run scripts/install-deps.sh])],
		[AC_MSG_RESULT([yes])], [AC_MSG_RESULT([yes])])
	AC_DEFINE_UNQUOTED([PHOS_CRIU_BIN], ["$CRIU_BIN"], [criu binary used by libcriu (swrk)])
])
