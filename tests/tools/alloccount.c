/* alloccount.c - an LD_PRELOAD shim that counts heap allocations.
 *
 * The count (malloc + calloc + realloc + aligned allocations) lives in a
 * file named by $ALLOCCOUNT_FILE, mapped shared, so a test can read it at any
 * moment while the process runs: ferry's hot path must not move it after
 * warm-up.  Allocation itself is passed to glibc's own functions.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static _Atomic uint64_t local_count;
static _Atomic uint64_t *counter = &local_count;

__attribute__((constructor)) static void alloccount_init(void)
{
	const char *path = getenv("ALLOCCOUNT_FILE");
	if (!path)
		return;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1)
		return;
	if (ftruncate(fd, sizeof(uint64_t)) == 0) {
		void *m = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m != MAP_FAILED) {
			*(_Atomic uint64_t *)m = atomic_load(&local_count);
			counter = m;
		}
	}
	close(fd);
}

static void count(void)
{
	atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
	count();
	return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	count();
	return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	count();
	return __libc_realloc(p, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	count();
	void *p = __libc_memalign(align, n);
	if (!p)
		return 12; /* ENOMEM */
	*out = p;
	return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
	count();
	return __libc_memalign(align, n);
}

void free(void *p)
{
	__libc_free(p);
}
