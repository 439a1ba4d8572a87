# ferry - one non-recursive Makefile.
#
#   make            build ./ferry (release, -O2)
#   make test       unit tests (cmocka) and integration tests (pytest)
#   make asan       the same tests against an ASan/UBSan build
#   make valgrind   the integration tests with ferry under valgrind memcheck
#   make soak       SOAK_SECONDS (600) of mixed traffic; RSS must stay flat
#   make fuzz       the libFuzzer targets, FUZZ_SECONDS (600) each (docs/fuzzing.md)
#   make demo       two local backends, ferry in front, traffic, failover
#   make format     clang-format the sources
#
# Objects go to build/<variant>/ so release and sanitizer objects never mix.
# Every entry point first runs scripts/deps.sh, which installs only the Debian
# packages that are missing.

VARIANT  ?= release
BUILD    := build/$(VARIANT)
CC       ?= cc
PKGS     := yaml-0.1 liburing
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
URING_VERSION := $(shell pkg-config --modversion liburing 2>/dev/null || echo unknown)
CFLAGS_BASE := -std=gnu11 $(WARN) -Isrc -MMD -MP -D_GNU_SOURCE \
               -DFERRY_LIBURING_VERSION='"$(URING_VERSION)"'
LDLIBS   := -lyaml -luring -lmicrohttpd -lcares -lpthread

ifeq ($(VARIANT),asan)
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
         -fno-sanitize-recover=undefined -DFERRY_POOL_MALLOC
  LDOPT := -fsanitize=address,undefined
else
  OPT := -O2 -g
  LDOPT :=
endif

CFLAGS  += $(CFLAGS_BASE) $(OPT)
LDFLAGS += $(LDOPT)

ifneq ($(V),1)
  Q := @
  say = @printf '  %-6s %s\n' $(1) $(2)
else
  Q :=
  say = @:
endif

LIB_SRC  := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/src/main.o
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps test unit integration asan demo clean format bench compdb

all: deps ferry

deps:
	@sh scripts/deps.sh build

ifeq ($(VARIANT),release)
ferry: $(BUILD)/ferry
	$(Q)cp $< $@.tmp && mv -f $@.tmp $@
endif

$(BUILD)/ferry: $(MAIN_OBJ) $(BUILD)/libferry.a
	$(call say,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libferry.a: $(LIB_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libferry.a
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) $(CFLAGS) -MF $@.d -o $@ $< $(BUILD)/libferry.a $(LDFLAGS) $(LDLIBS) -lcmocka

# --- tests -----------------------------------------------------------------

PYTHON = $(shell sh scripts/find-python.sh)

test:
	@sh scripts/deps.sh test
	$(Q)$(MAKE) --no-print-directory VARIANT=$(VARIANT) $(BUILD)/ferry $(UNIT_BIN) \
		build/alloccount.so
	$(Q)$(MAKE) --no-print-directory VARIANT=$(VARIANT) unit integration

unit: $(UNIT_BIN)
	@sh scripts/run-unit.sh $(UNIT_BIN)
	@sh scripts/run-fuzz-replay.sh $(FUZZ_REPLAY)

# LD_PRELOAD shim counting heap allocations: the hot-path test uses it.
build/alloccount.so: tests/tools/alloccount.c
	@mkdir -p build
	$(call say,CC,$<)
	$(Q)$(CC) -O2 -shared -fPIC -Wall -Wextra -Werror -o $@ $<

integration: $(BUILD)/ferry build/alloccount.so
	$(Q)FERRY_BIN=$(abspath $(BUILD)/ferry) $(PYTHON) -m pytest -q -p no:cacheprovider \
		tests/integration $(PYTEST_ARGS)

asan:
	$(Q)$(MAKE) --no-print-directory VARIANT=asan test

# --- valgrind and soak -----------------------------------------------------
# make valgrind: the integration suite against the release binary run under
# valgrind memcheck (FERRY_BIN is tests/tools/valgrind-ferry.sh): a test fails
# when memcheck reports an error or a definite/indirect leak (ferry's exit
# status becomes 99, and the report, in ferry's stderr, carries the marker
# VALGRIND-ERROR that the harness fails on).  Time bounds are multiplied by
# VALGRIND_SCALE; a test that cannot work under valgrind is skipped with its
# reason (tests/tools/valgrind_skips.py: the malloc-counting one).  epoll
# only: under valgrind 3.19 a thread waiting in io_uring_enter() keeps every
# other thread (admin, workers, resolver) from running (docs/soak.md).  The
# binary is copied first so that a rebuild during the long run cannot change it.
# make soak [SOAK_SECONDS=600]: tests/soak/soak.py, mixed traffic against one
# ferry, RSS sampled into build/soak-rss.csv, must stay flat (docs/soak.md).

VALGRIND_SCALE   ?= 10
VALGRIND_ENGINES ?= epoll
SOAK_SECONDS     ?= 600

.PHONY: valgrind soak

valgrind:
	@sh scripts/deps.sh test
	@command -v valgrind >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null; } || \
		{ echo "valgrind: not installed (apt-get install valgrind)" >&2; exit 1; }
	$(Q)$(MAKE) --no-print-directory VARIANT=release build/release/ferry
	@mkdir -p build/valgrind
	$(Q)cp build/release/ferry build/valgrind/ferry.tmp && \
		mv -f build/valgrind/ferry.tmp build/valgrind/ferry
	$(Q)FERRY_BIN=$(abspath tests/tools/valgrind-ferry.sh) \
		FERRY_VALGRIND_BIN=$(abspath build/valgrind/ferry) FERRY_VALGRIND=1 \
		FERRY_TEST_ENGINES=$(VALGRIND_ENGINES) FERRY_TEST_TIMEOUT_SCALE=$(VALGRIND_SCALE) \
		PYTHONPATH=$(abspath tests/tools) $(PYTHON) -m pytest -q -rs -p no:cacheprovider \
		-p valgrind_skips tests/integration $(PYTEST_ARGS)

soak:
	$(Q)$(MAKE) --no-print-directory deps ferry
	$(Q)SOAK_SECONDS=$(SOAK_SECONDS) FERRY_BIN=$(abspath build/release/ferry) \
		$$(command -v /usr/bin/python3 || command -v python3) tests/soak/soak.py

demo: all
	@sh scripts/deps.sh demo
	$(Q)$$(command -v /usr/bin/python3 || command -v python3) scripts/demo.py ./ferry

# --- benchmarks ------------------------------------------------------------
# make bench: ferry against HAProxy, nginx stream, socat and direct in one run;
# writes docs/benchmarks.md, docs/benchmarks.json, docs/bench.png.
# BENCH_ARGS passes options to bench/run.py (e.g. BENCH_ARGS=--quick).

bench:
	$(Q)$(MAKE) --no-print-directory deps ferry
	@sh bench/deps.sh
	@mkdir -p build/bench
	$(call say,CC,bench/load.c)
	$(Q)$(CC) -std=gnu11 $(WARN) -O2 -D_GNU_SOURCE -o build/bench/load bench/load.c
	$(Q)$$(command -v /usr/bin/python3 || command -v python3) bench/run.py \
		--load build/bench/load $(BENCH_ARGS)

# --- fuzzing ---------------------------------------------------------------
# make fuzz [FUZZ_SECONDS=600] [FUZZ_JOBS=2] [FUZZ_TARGETS="config ..."]:
# the libFuzzer targets tests/fuzz/fuzz_<target>.c, built with clang in
# build/fuzz/ against the sources compiled there with the same flags (never
# the gcc objects), each run for FUZZ_SECONDS over a copy of its corpus
# (build/fuzz/corpus-<target>/), FUZZ_JOBS at a time; crashes go to
# build/fuzz/crashes-<target>/.  See docs/fuzzing.md.
# `make test` replays every tests/fuzz/corpus/ and tests/fuzz/regressions/
# input through the same target code built with $(CC) and
# tests/fuzz/replay_main.c ($(BUILD)/fuzz-replay-<target>): no clang needed.

FUZZ_ALL     := config proxyproto framer admin
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_SECONDS ?= 600
FUZZ_JOBS    ?= 2
FUZZ_CC      ?= clang
FUZZ_BUILD   := build/fuzz
FUZZ_CFLAGS  := $(CFLAGS_BASE) -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=undefined -DFERRY_POOL_MALLOC
FUZZ_OBJ     := $(LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_REPLAY  := $(FUZZ_ALL:%=$(BUILD)/fuzz-replay-%)

.PHONY: fuzz

fuzz:
	@sh scripts/deps.sh fuzz
	$(Q)$(MAKE) --no-print-directory $(FUZZ_BIN)
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) sh scripts/run-fuzz.sh $(FUZZ_TARGETS)

$(FUZZ_OBJ): $(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CLANG,$<)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/libferry.a: $(FUZZ_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_BIN): $(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libferry.a
	$(call say,CLANG,$<)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MF $@.d -o $@ $< \
		$(FUZZ_BUILD)/libferry.a $(LDLIBS)

unit: $(FUZZ_REPLAY)

$(FUZZ_REPLAY): $(BUILD)/fuzz-replay-%: $(BUILD)/tests/fuzz/fuzz_%.o \
		$(BUILD)/tests/fuzz/replay_main.o $(BUILD)/libferry.a
	$(call say,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

format:
	clang-format -i $$(find src tests/unit -name '*.[ch]')

compdb:
	bear -- $(MAKE) -B

clean:
	rm -rf build ferry

# --- install ---------------------------------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=/staging]: the release binary, both
# man pages and the systemd unit, whose ExecStart/ExecReload follow PREFIX.
# The example configuration goes to /etc/ferry/ferry.yaml (never under PREFIX:
# the unit reads it there) only when no file is there, so reinstalling never
# overwrites an operator's file; uninstall leaves that file alone too.

.PHONY: install uninstall

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
FERRY_CONF := /etc/ferry/ferry.yaml

install: all
	$(call say,INSTALL,"$(DESTDIR)$(BINDIR)/ferry")
	$(Q)install -D -m 0755 ferry "$(DESTDIR)$(BINDIR)/ferry"
	$(Q)install -D -m 0644 man/ferry.1 "$(DESTDIR)$(MANDIR)/man1/ferry.1"
	$(Q)install -D -m 0644 man/ferry.yaml.5 "$(DESTDIR)$(MANDIR)/man5/ferry.yaml.5"
	$(Q)install -d -m 0755 "$(DESTDIR)$(UNITDIR)"
	$(Q)sed 's|/usr/local/bin/ferry|$(BINDIR)/ferry|g' packaging/ferry.service \
		> "$(DESTDIR)$(UNITDIR)/ferry.service.tmp"
	$(Q)chmod 0644 "$(DESTDIR)$(UNITDIR)/ferry.service.tmp"
	$(Q)mv -f "$(DESTDIR)$(UNITDIR)/ferry.service.tmp" "$(DESTDIR)$(UNITDIR)/ferry.service"
	$(Q)if [ -e "$(DESTDIR)$(FERRY_CONF)" ]; then \
		echo "install: kept the existing $(DESTDIR)$(FERRY_CONF)"; \
	else \
		install -D -m 0644 packaging/ferry.yaml "$(DESTDIR)$(FERRY_CONF)"; \
	fi
	@[ -n "$(DESTDIR)" ] || echo "install: now run: systemctl daemon-reload && systemctl enable --now ferry"

uninstall:
	$(Q)rm -f "$(DESTDIR)$(BINDIR)/ferry" "$(DESTDIR)$(MANDIR)/man1/ferry.1" \
		"$(DESTDIR)$(MANDIR)/man5/ferry.yaml.5" "$(DESTDIR)$(UNITDIR)/ferry.service"
	@[ ! -e "$(DESTDIR)$(FERRY_CONF)" ] || \
		echo "uninstall: kept $(DESTDIR)$(FERRY_CONF); remove it by hand if unwanted"

-include $(shell find build -name '*.d' 2>/dev/null)
