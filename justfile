# Every developer and CI command. `just --list` shows them.
# On a fresh machine: `python3 -m pip install rust-just` provides `just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Show the recipes.
default:
    @just --list

# Install what the build and tests need that a fresh machine lacks.
setup:
    command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# The main job: a tour of the embedded scheduler.
demo:
    cargo run --quiet --release --example demo -p tiffany-scheduler

# Every test: lint, the kernel with and without async-io, doc tests.
test: setup lint test-rust

# Rust tests: nextest with the default features (async-io) and without, plus doc tests.
test-rust:
    cargo nextest run --workspace --no-fail-fast
    cargo nextest run --workspace --no-fail-fast --no-default-features
    cargo test --workspace --doc --quiet

# Formatting and lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --workspace --all-targets --no-default-features -- -D warnings

# Native benchmarks (Criterion).
bench-native:
    cargo bench -p tiffany-scheduler --bench native

# API documentation.
doc:
    cargo doc --workspace --no-deps
