//! The `nudge` binary: the command line lives in the library, in `nudge::cli`.

fn main() -> std::process::ExitCode {
    nudge::cli::main()
}
