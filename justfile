# pare's recipes (install just with `cargo install just`).

# Build a Debian-like image from this machine's programs and harden it (no registry needed).
demo:
    cargo run --release --example demo

# The whole test suite, installing what it needs (docker-registry, skopeo, umoci, …).
test:
    ./scripts/test.sh

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Figures (release build): pare harden of a large image vs skopeo copy of it; pare batch of 8
# images sharing that base vs pare harden of each.
bench:
    cargo test --release --test bench -- --ignored --nocapture --test-threads=1
