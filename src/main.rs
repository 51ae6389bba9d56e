//! The `switchboard` command. Thin: parses arguments, sets up logging and
//! calls the library. Exit codes: 0 success, 1 runtime failure, 2 invalid
//! configuration or knowledge files.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
