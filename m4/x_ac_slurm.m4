# X_AC_SLURM: slurm/spank.h and libslurm; --with-slurm=PREFIX for a non-system Slurm.
# Detects spank_prepend_task_argv (Slurm >= 23.11).
AC_DEFUN([X_AC_SLURM], [
	AC_ARG_WITH([slurm],
		[AS_HELP_STRING([--with-slurm=PREFIX], [Slurm installation prefix (headers in PREFIX/include)])],
		[SLURM_CPPFLAGS="-I$withval/include"; SLURM_LDFLAGS="-L$withval/lib"], [])
	save_CPPFLAGS=$CPPFLAGS; save_LDFLAGS=$LDFLAGS
	CPPFLAGS="$CPPFLAGS $SLURM_CPPFLAGS"; LDFLAGS="$LDFLAGS $SLURM_LDFLAGS"
	AC_CHECK_HEADER([slurm/spank.h], [],
		[AC_MSG_ERROR([slurm/spank.h not found: install libslurm-dev or pass --with-slurm=PREFIX])])
	AC_CHECK_LIB([slurm], [slurm_load_job], [SLURM_LIBS=-lslurm],
		[AC_MSG_ERROR([libslurm not found: install libslurm-dev or pass --with-slurm=PREFIX])])
	AC_CHECK_DECLS([spank_prepend_task_argv], [], [], [[#include <slurm/spank.h>]])
	AC_COMPUTE_INT([slurm_version_num], [SLURM_VERSION_NUMBER], [[#include <slurm/slurm_version.h>]], [slurm_version_num=0])
	SLURM_VERSION_STR=$(printf "%d.%02d.%d" $(( slurm_version_num >> 16 )) $(( (slurm_version_num >> 8) & 255 )) $(( slurm_version_num & 255 )))
	CPPFLAGS=$save_CPPFLAGS; LDFLAGS=$save_LDFLAGS
	AC_SUBST([SLURM_CPPFLAGS])
	AC_SUBST([SLURM_LDFLAGS])
	AC_SUBST([SLURM_LIBS])
])
