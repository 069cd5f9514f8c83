# Every developer and CI command. `just --list` shows them.
# On a fresh machine: `python3 -m pip install rust-just` provides `just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
python := venv / "bin/python"

# Show the recipes.
default:
    @just --list

# Install what the build and tests need that a fresh machine lacks.
setup:
    command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
    test -x {{python}} || python3 -m venv {{venv}}
    {{python}} -m pip install -q --upgrade "maturin>=1.5,<2" "pytest>=9" "pytest-timeout>=2" "ruff>=0.5" "mypy>=1.10" \
        "aiohttp>=3.9" "httpx>=0.27" "anyio>=4" "trustme>=1" "uvloop>=0.19" \
        "hypothesis>=4.18.2" "psutil>=5.9" "pytest-mock>=3.14" "truststore>=0.9.1" "blockbuster>=1.5.29"

# Build the Python package into the project's environment (.venv).
develop: setup
    VIRTUAL_ENV={{venv}} {{venv}}/bin/maturin develop --quiet

# The main job: a tour of the runtime on the embedded scheduler.
demo: develop
    {{python}} -m tiffany

# Every test: lints, the kernel with and without async-io, doc tests, the Python
# suite, and a wheel installed with pip into a fresh environment.
test: lint test-rust test-python test-anyio check-install

# Rust tests: nextest with the default features (async-io) and without, plus doc tests.
test-rust: setup
    cargo nextest run --workspace --no-fail-fast
    cargo nextest run --workspace --no-fail-fast --no-default-features
    cargo test --workspace --doc --quiet

# The Python suite against a fresh build of the package.
test-python: develop
    {{python}} -m pytest tests/python -q

# anyio's own test suite, asyncio backend, on the Tiffany loop. Its tests are
# not in the wheel: the sdist of the installed anyio is fetched from PyPI into
# target/anyio; tests/anyio/tiffany_anyio.py puts every loop on Tiffany and
# skips what tests/anyio/known_failures.txt lists (with the reason).
test-anyio: develop
    #!/usr/bin/env bash
    set -euo pipefail
    version="$({{python}} -c 'import importlib.metadata as m; print(m.version("anyio"))')"
    dir="target/anyio/anyio-$version"
    if [ ! -d "$dir/tests" ]; then
        mkdir -p target/anyio
        {{python}} -m pip download -q --no-binary :all: --no-deps "anyio==$version" -d target/anyio
        tar -xzf "target/anyio/anyio-$version.tar.gz" -C target/anyio
    fi
    cd "$dir"
    PYTHONPATH="{{justfile_directory()}}/tests/anyio" {{python}} -m pytest -p tiffany_anyio tests -q -p no:cacheprovider

# Formatting and lints, Rust and Python (and rustdoc's link checks); the
# stubs are checked against the built module (stubtest), so it builds it.
lint: develop
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --workspace --all-targets --no-default-features -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
    {{venv}}/bin/ruff check python tests/python tests/anyio examples bench
    {{venv}}/bin/ruff format --check python tests/python tests/anyio examples bench
    {{venv}}/bin/mypy python/tiffany
    MYPYPATH=python {{venv}}/bin/mypy --strict examples tests/python tests/anyio
    {{python}} -m mypy.stubtest tiffany._native --allowlist python/stubtest-allowlist.txt

# `pip install .` into a fresh environment, then the demo from outside the tree.
check-install:
    rm -rf target/install-check && python3 -m venv target/install-check
    target/install-check/bin/pip install -q .
    cd target && install-check/bin/python -m tiffany > /dev/null && echo "pip install . works"

# Native benchmarks (Criterion).
bench-native:
    cargo bench -p tiffany-scheduler --bench native

# Options: --seconds S (per measurement, default 3), --dir DIR (on the disk
# to measure; default target/wal-bench), --records N (default 1,000,000).
#
# The write-ahead log: durable appends (1, 16 threads) vs raw fdatasync, replay of 1M records.
bench-wal *args:
    cargo run --release -p tiffany-wal --example wal_bench -- {{args}}

# `just bench` (about 20 minutes) pip-installs the peers into .venv, builds a
# release wheel of tiffany into target/bench, runs every workload on every
# runtime and writes docs/mdbook/src/benchmarks.md; `just bench --quick` (about
# a minute) writes target/bench/benchmarks-quick.md instead; a full run includes
# the Criterion benches (`--no-native` skips them, `--quick --native` adds them);
# `.venv/bin/python -m bench --help` lists the options.
#
# Benchmarks against asyncio, uvloop, rloop, trio and gevent (`--quick`: short version).
bench *args: setup
    BENCH_COMMAND="$(echo just bench {{args}})" {{python}} -m bench {{args}}

# Runs a few fixed programs under valgrind's callgrind with release builds of
# BASE and HEAD (default: the working tree): a host-independent answer to "did
# this change make Tiffany slower?" (`just bench-ab main~3`). Options:
# --only SUBSTRING, -n OPS, --no-build, --cache (cache misses too).
#
# Instructions per operation, two revisions compared (bench/ab.py).
[positional-arguments]
bench-ab base *args: setup
    {{python}} -m bench.ab "$@"

# The same two builds, timed on the wall clock instead: for each program,
# processes of BASE and HEAD alternate (5 each, `--procs`), each printing the
# best of 7 in-process runs (`--inner`); the table gives each side's min,
# median and spread, and says "no difference" when the change is within the
# spread. Options: HEAD, --procs P, --inner R, --only SUBSTRING, -n OPS,
# --peer uvloop, --no-build (bench/wall.py; `just bench-ab-wall main~3`).
#
# Wall-clock ns per operation, two revisions in alternating processes.
[positional-arguments]
bench-ab-wall base *args: setup
    {{python}} -m bench.ab --wall "$@"

# Counts instructions per `asyncio.sleep(0)` switch on uvloop and Tiffany and
# with no loop at all (the Python code every loop runs): the most any loop can
# gain over uvloop there (bench/ceiling.py; `--help` for options).
#
# How much faster than uvloop any loop could be on the switch.
bench-ceiling *args: setup
    {{python}} -m bench.ceiling {{args}}

# The short version of `just bench`.
bench-quick: (bench "--quick")

# API documentation.
doc:
    cargo doc --workspace --no-deps

# Mutation testing of the kernel (cargo-mutants; hours on 2 cores; not in CI):
# every mutant the Rust tests do not kill is listed in target/mutants/mutants.out.
mutants *args: setup
    command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
    cargo mutants -p tiffany-scheduler --test-tool nextest --output target/mutants {{args}}

# Options: --seconds S (per measurement, default 3), --dir DIR (on the disk to
# measure; default target/daemon-bench), --records N (default 1,000,000),
# --replays N (default 5), --no-page (print only). Code in bench/daemon/.
#
# tiffanyd: submit-to-ack throughput and latency (1, 16 clients) vs raw fdatasync, replay of 1M records; writes the book's "Service mode" section.
bench-daemon *args: setup
    cargo build --release -p tiffany-daemon --bin tiffanyd --example daemon_bench
    {{python}} -m bench.daemon {{args}}
