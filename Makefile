# Thin wrapper over CMake. Each target installs what is missing (Debian 12 packages), configures
# and builds before it runs, so `make run` and `make test` work on a fresh machine.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
CONFIG     ?= config/postern.toml
FUZZ_SECONDS ?= 20
JOBS       ?= $(shell nproc)

.PHONY: all deps build run test test-asan fuzz-build fuzz fuzz-smoke bench clean

all: build

deps:
	@bash cmake/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/postern serve --config $(CONFIG)

# Every test again with postern built under AddressSanitizer + UndefinedBehaviorSanitizer: the
# unit tests, and the integration tests driving the sanitized server.
test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_SANITIZE=ON \
		-DPOSTERN_UNIT_ONLY=OFF >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

fuzz-build: deps
	@CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DPOSTERN_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)

# A short run of every fuzz target (part of `make test`); `make fuzz FUZZ_SECONDS=600` for more.
fuzz-smoke: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz: FUZZ_SECONDS = 600
fuzz: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory fuzz-smoke

bench: build
	bash tests/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
