/* fuzz.h - what every fuzz target in tests/fuzz/ shares: the libFuzzer entry
 * points, and how a target reports a broken property.
 *
 * Each fuzz_<target>.c is built twice (see the Makefile):
 *   - with clang and -fsanitize=fuzzer,address,undefined by `make fuzz`,
 *     where libFuzzer provides main();
 *   - with the ordinary compiler and tests/fuzz/replay_main.c by `make test`,
 *     which feeds it every file of tests/fuzz/corpus/<target>/ and
 *     tests/fuzz/regressions/<target>/, so that a crash once found stays
 *     fixed without clang.
 * So a target uses nothing from libFuzzer beyond these two functions.
 *
 * A target checks the properties of the code under test itself (a sanitizer
 * only catches memory and UB errors) and calls fuzz_fail() when one does not
 * hold: it prints what and aborts, which both drivers count as a crash.
 */
#ifndef FERRY_TESTS_FUZZ_H
#define FERRY_TESTS_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* One input: data[0..size) (not NUL-terminated).  Returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Called once before the first input; optional (a weak symbol in the
 * replay driver). */
int LLVMFuzzerInitialize(int *argc, char ***argv);

__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("fuzz: property failed: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

#endif
