/*
 * cr_mapped.c - maps a file and reads its first pages, for the read-ahead
 * of a restore (daemon/prefetch.c).
 *
 *   cr_mapped FILE MIB [WRITE_AT_MIB]
 *
 * Maps FILE (private), reads one byte of every page of its first MIB MiB
 * and, with WRITE_AT_MIB, writes one byte into the page at that many MiB
 * (the process's private copy of it, which CRIU restores by writing it
 * back), creates FILE.ready, then sleeps without touching the mapping
 * again: after a restore, what of FILE is in the page cache was read
 * ahead, not faulted in by the process.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	volatile unsigned char sum = 0;
	char ready[4096];
	struct stat st;
	size_t n;
	long ps = sysconf(_SC_PAGESIZE);
	unsigned char *p;
	int fd;

	for (int i = 3; i < 1024; i++)
		close(i);
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: cr_mapped FILE MIB [WRITE_AT_MIB]\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	n = (size_t)atoi(argv[2]) << 20;
	if (n > (size_t)st.st_size)
		n = (size_t)st.st_size;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	close(fd);
	for (size_t off = 0; off < n; off += (size_t)ps)
		sum += p[off];
	if (argc == 4 && ((size_t)atoi(argv[3]) << 20) < (size_t)st.st_size)
		p[(size_t)atoi(argv[3]) << 20] ^= 0x5a;
	snprintf(ready, sizeof(ready), "%s.ready", argv[1]);
	fd = open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0)
		close(fd);
	for (;;)
		pause();
}
