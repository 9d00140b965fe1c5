# scour: cleans stale, vulnerable images off Kubernetes nodes.
# `just` alone lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

[private]
default:
    @just --list --unsorted

# Install what the build and tests need (idempotent; fast when all is present).
setup:
    scripts/setup

# Build the policies we ship as Wasm components into target/policies/.
build-policies: setup
    cargo build --quiet -p scour-default-policy --target wasm32-wasip2 --profile guest --target-dir target/guests
    mkdir -p target/policies
    cp target/guests/wasm32-wasip2/guest/scour_default_policy.wasm target/policies/default.wasm
    @echo "built target/policies/default.wasm"

# A private containerd with sample images, real Trivy, one pass with the default policy (needs root).
demo: setup
    cargo build --quiet -p scour -p scour-testkit --bin scour --bin scour-demo
    target/debug/scour-demo target/debug/scour

# Build the scour binary (release).
build: setup
    cargo build --release -p scour

# Run every test, then the default policy's golden cases through the CLI.
test: setup
    cargo test --workspace
    cargo run --quiet -p scour -- policy test policies/default/tests

# Check formatting without changing files.
fmt-check:
    cargo fmt --all -- --check

# Format the code.
fmt:
    cargo fmt --all

# Clippy with warnings as errors, for the host and for the Wasm guests.
lint: setup
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --quiet -p scour-default-policy -p scour-policy-guest -p scour-hostile-guests --examples --target wasm32-wasip2 --target-dir target/guests -- -D warnings

# What CI runs: formatting, lints, tests.
ci: fmt-check lint test

# Benchmarks (release build); each prints ratios against its baseline.
bench: setup
    cargo bench -p scour --bench policy
    cargo bench -p scour --bench worker
    cargo bench -p scour --bench policy_examples
