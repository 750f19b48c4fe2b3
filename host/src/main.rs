//! The `gantry` binary: everything is in [`gantry::cli`].

/// mimalloc instead of glibc's malloc: a request allocates and frees many
/// small objects across tokio's worker threads, which glibc serves with
/// more work per call (docs/benchmarks.md has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gantry::cli::main()
}
