# X_AC_WARNINGS: -Wall -Wextra always; --enable-werror (default yes) adds -Werror.
AC_DEFUN([X_AC_WARNINGS], [
	AC_ARG_ENABLE([werror],
		[AS_HELP_STRING([--disable-werror], [do not treat warnings as errors])],
		[], [enable_werror=yes])
	WARN_CFLAGS="-Wall -Wextra -Wformat=2 -Wshadow -Wpointer-arith -Wmissing-prototypes -Wstrict-prototypes -Wno-unused-parameter"
	AS_IF([test "x$enable_werror" = xyes], [WARN_CFLAGS="$WARN_CFLAGS -Werror"])
	AC_SUBST([WARN_CFLAGS])
])
