# X_AC_SANITIZE: --enable-sanitizer[=address,undefined] builds everything with
# those sanitizers (the interposer is never built with ASan: it is preloaded
# into programs we do not build; phos-restore neither: CRIU traces it).
AC_DEFUN([X_AC_SANITIZE], [
	AC_ARG_ENABLE([sanitizer],
		[AS_HELP_STRING([--enable-sanitizer@<:@=LIST@:>@], [build with -fsanitize=LIST (default address,undefined)])],
		[AS_IF([test "x$enableval" = xyes], [enable_sanitizer="address,undefined"])],
		[enable_sanitizer=no])
	SAN_CFLAGS=
	SAN_LDFLAGS=
	AS_IF([test "x$enable_sanitizer" != xno], [
		SAN_CFLAGS="-fsanitize=$enable_sanitizer -fno-omit-frame-pointer -fno-sanitize-recover=all"
		SAN_LDFLAGS="-fsanitize=$enable_sanitizer"
	])
	AC_SUBST([SAN_CFLAGS])
	AC_SUBST([SAN_LDFLAGS])
	AM_CONDITIONAL([WITH_SANITIZER], [test "x$enable_sanitizer" != xno])
])
