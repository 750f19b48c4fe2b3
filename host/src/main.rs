//! The `gantry` binary: everything is in [`gantry::cli`].

fn main() -> std::process::ExitCode {
    gantry::cli::main()
}
