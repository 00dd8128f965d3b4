//! Command-line interface of `hashgrid-node`: argument parsing and one function per command.

mod bench;
mod devices;
mod mine;
mod run;
mod search;

use clap::{Args, Parser, Subcommand};
use hashgrid_node::search::BackendChoice;

#[derive(Debug, Parser)]
#[command(name = "hashgrid-node", version, about = "hashgrid node: SHA-256d nonce search on GPUs and CPUs")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Search a nonce range of a header for hashes meeting a target.
    Search(search::SearchArgs),
    /// Measure the hash rate of a backend.
    Bench(bench::BenchArgs),
    /// List GPU adapters and the CPU.
    Devices(devices::DevicesArgs),
    /// Join a coordinator and search the ranges it assigns, until Ctrl-C or SIGTERM.
    Run(run::RunArgs),
    /// Mine on a Stratum V1 pool, standalone, until Ctrl-C or SIGTERM.
    Mine(mine::MineArgs),
    /// The configuration file of `run`.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the default configuration file, every key documented.
    PrintDefault,
    /// Check a configuration file (with the flags and environment given) and print the settings.
    Check(Box<run::RunArgs>),
}

/// Which device searches.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// auto: a hardware GPU if present, else the CPU; gpu: a GPU adapter, software ones included.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// GPU adapter, by index or (part of) its name (see `devices`).
    #[arg(long)]
    pub adapter: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Search(args) => search::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Run(args) => run::run(args),
        Command::Mine(args) => mine::run(args),
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{}", hashgrid_node::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Config(ConfigCommand::Check(args)) => {
            println!("{:#?}", args.settings()?);
            Ok(())
        }
    }
}
