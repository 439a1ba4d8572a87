/* replay_main.c - runs a fuzz target without libFuzzer: every file of the
 * directories (or the files) given is fed once to LLVMFuzzerTestOneInput(),
 * each in a child process of its own, so that one input that crashes or
 * aborts is reported by name and the others still run.  `make test` links
 * it with each tests/fuzz/fuzz_<target>.c (ordinary compiler, no clang) and
 * runs it over tests/fuzz/corpus/<target>/ and tests/fuzz/regressions/<target>/.
 *
 *   fuzz-replay-<target> DIR_OR_FILE...
 *
 * A directory that does not exist is skipped (a target with no regression
 * yet has no directory); files whose name starts with '.' are skipped.
 * Prints one line "NAME: N passed, M failed" and exits 1 when M > 0 or
 * when nothing at all was run.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

/* Defined by the targets that need set-up. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int read_file(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t n = 0, cap = 0;

	if (!f)
		return -errno;
	for (;;) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			uint8_t *p = realloc(buf, ncap);

			if (!p) {
				free(buf);
				fclose(f);
				return -ENOMEM;
			}
			buf = p;
			cap = ncap;
		}
		size_t got = fread(buf + n, 1, cap - n, f);

		n += got;
		if (got == 0)
			break;
	}
	int bad = ferror(f);

	fclose(f);
	if (bad) {
		free(buf);
		return -EIO;
	}
	/* An exact-size copy, so that ASan sees a read past the input. */
	uint8_t *exact = malloc(n ? n : 1);

	if (!exact) {
		free(buf);
		return -ENOMEM;
	}
	memcpy(exact, buf, n);
	free(buf);
	*out = exact;
	*len = n;
	return 0;
}

/* Runs one input in a child.  0 when it passed. */
static int run_one(const char *path)
{
	fflush(NULL);
	pid_t pid = fork();

	if (pid == -1) {
		fprintf(stderr, "fuzz replay: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		uint8_t *data = NULL;
		size_t len = 0;
		int rc = read_file(path, &data, &len);

		if (rc < 0) {
			fprintf(stderr, "fuzz replay: %s: %s\n", path, strerror(-rc));
			_exit(2);
		}
		LLVMFuzzerTestOneInput(data, len);
		free(data);
		fflush(NULL);
		exit(0); /* exit, not _exit: LeakSanitizer runs at exit */
	}
	int status;

	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		fprintf(stderr, "fuzz replay: %s: killed by signal %d\n", path, WTERMSIG(status));
	else
		fprintf(stderr, "fuzz replay: %s: exit status %d\n", path, WEXITSTATUS(status));
	return -1;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every file of dir, in name order. */
static void run_dir(const char *dir, unsigned *pass, unsigned *fail)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;

	if (!d) {
		if (errno != ENOENT) {
			fprintf(stderr, "fuzz replay: %s: %s\n", dir, strerror(errno));
			(*fail)++;
		}
		return;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char **p = realloc(names, ncap * sizeof(*p));

			if (!p)
				break;
			names = p;
			cap = ncap;
		}
		size_t len = strlen(dir) + strlen(e->d_name) + 2;

		names[n] = malloc(len);
		if (!names[n])
			break;
		snprintf(names[n], len, "%s/%s", dir, e->d_name);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		struct stat sb;

		if (stat(names[i], &sb) == 0 && S_ISREG(sb.st_mode)) {
			if (run_one(names[i]) == 0)
				(*pass)++;
			else
				(*fail)++;
		}
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	unsigned pass = 0, fail = 0;
	const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat sb;

		if (stat(argv[i], &sb) == 0 && S_ISREG(sb.st_mode)) {
			if (run_one(argv[i]) == 0)
				pass++;
			else
				fail++;
		} else {
			run_dir(argv[i], &pass, &fail);
		}
	}
	printf("%s: %u passed, %u failed\n", name, pass, fail);
	return fail || pass == 0 ? 1 : 0;
}
