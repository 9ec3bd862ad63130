# pare's recipes (install just with `cargo install just`).

# Build a Debian-like image from this machine's programs and harden it (no registry needed).
demo:
    cargo run --release --example demo

# pare's own OCI image (target/image, tags pare and pare-hardened): the release binary, its
# libraries and CA certificates, hardened by pare itself. No Docker needed.
image:
    cargo build --release
    cargo run --release --example image

# The whole test suite, installing what it needs (docker-registry, skopeo, umoci, …).
test:
    ./scripts/test.sh

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings -W clippy::too_many_lines

# Figures (release build): pare harden of a large image vs skopeo copy of it; pare batch of 8
# images sharing that base vs pare harden of each.
bench:
    cargo test --release --test bench -- --ignored --nocapture --test-threads=1

# The breadth sweep: every case of tests/sweep/*.toml (real Debian programs with real workloads)
# hardened with no flags and compared with the original as 65532; verdicts to docs/sweep.md.
# Needs root. ONLY is a regex of case names (empty: all).
sweep ONLY="":
    cargo build --release
    SWEEP_ONLY="{{ONLY}}" PARE_BIN=target/release/pare cargo test --release --test works sweep -- --ignored --nocapture

# Fuzz every parser for SECONDS each (cargo-fuzz, nightly pinned in fuzz/rust-toolchain.toml;
# `cargo install cargo-fuzz` once). Seeds come from this machine's files (fuzz/seeds.sh);
# crashes land in fuzz/artifacts/TARGET/ and each becomes a regression unit test.
fuzz SECONDS="600":
    cd fuzz && ./seeds.sh && for t in layer elf ldcache reference manifest packages scripts; do cargo fuzz run -O $t corpus/$t -- -max_total_time={{SECONDS}} -rss_limit_mb=2048 -max_len=1048576 || exit 1; done
