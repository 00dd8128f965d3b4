//! The `hashgrid-node` binary: nonce search, benchmarks and device listing on this rig (and,
//! with the coordinator, the node service). Errors are one line on stderr and exit code 2.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    let args = match hashgrid_common::cli::parse_command_line::<cli::Cli>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hashgrid-node: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
