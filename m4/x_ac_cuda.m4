# X_AC_CUDA: CUDA Toolkit headers (cuda.h).  No library is linked: the
# driver is opened with dlopen("libcuda.so.1") at run time so everything
# builds and runs on machines without a GPU.
AC_DEFUN([X_AC_CUDA], [
	AC_ARG_WITH([cuda],
		[AS_HELP_STRING([--with-cuda=DIR], [CUDA Toolkit (default /usr/local/cuda)])],
		[CUDA_HOME=$withval], [CUDA_HOME=/usr/local/cuda])
	CUDA_CPPFLAGS="-I$CUDA_HOME/include"
	save_CPPFLAGS=$CPPFLAGS; CPPFLAGS="$CPPFLAGS $CUDA_CPPFLAGS"
	AC_CHECK_HEADER([cuda.h], [],
		[AC_MSG_ERROR([cuda.h not found in $CUDA_HOME/include: pass --with-cuda=DIR])])
	AC_COMPUTE_INT([cuda_version_num], [CUDA_VERSION], [[#include <cuda.h>]], [cuda_version_num=0])
	AS_IF([test "$cuda_version_num" -lt 12080],
		[AC_MSG_ERROR([CUDA Toolkit $cuda_version_num is older than 12.8: the driver checkpoint API needs 12.8+])])
	CUDA_VERSION_STR="$(( cuda_version_num / 1000 )).$(( (cuda_version_num % 1000) / 10 ))"
	CPPFLAGS=$save_CPPFLAGS
	AC_PATH_PROG([NVCC], [nvcc], [], [$CUDA_HOME/bin:$PATH])
	dnl nvcc builds phos-gpu's buffer hash kernel (PTX, no GPU needed);
	dnl without it the concurrent GPU save is off (copies block the app)
	AM_CONDITIONAL([HAVE_NVCC], [test -n "$NVCC"])
	AC_SUBST([CUDA_HOME])
	AC_SUBST([CUDA_CPPFLAGS])
])
