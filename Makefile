# ferry - one non-recursive Makefile.
#
#   make            build ./ferry (release, -O2)
#   make test       unit tests (cmocka) and integration tests (pytest)
#   make asan       the same tests against an ASan/UBSan build
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
LDLIBS   := -lyaml -luring -lpthread

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
	$(Q)$(MAKE) --no-print-directory VARIANT=$(VARIANT) $(BUILD)/ferry $(UNIT_BIN)
	$(Q)$(MAKE) --no-print-directory VARIANT=$(VARIANT) unit integration

unit: $(UNIT_BIN)
	@sh scripts/run-unit.sh $(UNIT_BIN)

integration: $(BUILD)/ferry
	$(Q)FERRY_BIN=$(abspath $(BUILD)/ferry) $(PYTHON) -m pytest -q -p no:cacheprovider \
		tests/integration $(PYTEST_ARGS)

asan:
	$(Q)$(MAKE) --no-print-directory VARIANT=asan test

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

format:
	clang-format -i $$(find src tests/unit -name '*.[ch]')

compdb:
	bear -- $(MAKE) -B

clean:
	rm -rf build ferry

-include $(shell find build -name '*.d' 2>/dev/null)
