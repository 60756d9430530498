# SPDX-License-Identifier: Apache-2.0
# The commands users type. Everything builds with Meson + Ninja into build/ (and build-asan/ for
# the sanitizer run); Debian packages come from scripts/deps.sh.

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
PYTHON     ?= /usr/bin/python3
PYTEST     ?= $(PYTHON) -m pytest
WERROR     ?= true
FUZZ_SECONDS ?= 60

.PHONY: all deps build test test-unit test-integration test-asan demo bench fuzz fmt lint docs image clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) -Dwerror=$(WERROR) --buildtype=debugoptimized

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Unit tests and fuzz-corpus replays (meson), then the integration suite (pytest, real processes).
test: build
	meson test -C $(BUILD) --print-errorlogs --num-processes 2
	SIDECAR_BIN=$(abspath $(BUILD))/sidecar $(PYTEST) tests/integration -q -p no:cacheprovider

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Dwerror=$(WERROR) --buildtype=debug \
	    -Db_sanitize=address,undefined -Db_lundef=false \
	    -Dc_args=-fno-sanitize-recover=all -Dc_link_args=-fno-sanitize-recover=all

# The same tests under AddressSanitizer + UndefinedBehaviorSanitizer (leaks fail the run).
test-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    meson test -C $(ASAN_BUILD) --print-errorlogs --num-processes 2 --timeout-multiplier 3
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    SIDECAR_BIN=$(abspath $(ASAN_BUILD))/sidecar SIDECAR_SANITIZED=1 \
	    $(PYTEST) tests/integration -q -p no:cacheprovider

demo: build
	examples/quickstart/run.sh $(abspath $(BUILD))/sidecar

bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory build
	ninja -C $(BUILD) bench_http1
	bench/run.sh $(abspath $(BUILD))

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false

# Runs every libFuzzer target for FUZZ_SECONDS on its corpus (new inputs land in build-fuzz/);
# undefined behaviour stops the run like a crash does.
fuzz: deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)
	@for f in $(FUZZ_BUILD)/fuzz_*; do \
	    t=$${f##*/fuzz_}; mkdir -p $(FUZZ_BUILD)/corpus-$$t; \
	    echo "fuzzing $$t for $(FUZZ_SECONDS)s"; \
	    dict=""; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	        $$f -max_total_time=$(FUZZ_SECONDS) $$dict $(FUZZ_BUILD)/corpus-$$t tests/fuzz/corpus/$$t || exit 1; \
	done

# The container image as an OCI archive (also a docker-archive) from the local build: the binary,
# exactly the libraries it loads, CA certificates, user 1337. Nothing is downloaded.
IMAGE ?= $(BUILD)/sidecar-image.tar
image: build
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) $(PYTHON) scripts/image.py \
	    $(abspath $(BUILD))/sidecar $(IMAGE)

fmt:
	git ls-files '*.c' '*.h' | xargs clang-format -i

lint:
	scripts/lint.sh

# Regenerates the option reference tables in docs/ from the roles' option tables.
docs: build
	scripts/gen-docs.sh $(abspath $(BUILD))/sidecar

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
