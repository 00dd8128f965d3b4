//! `hashgrid`, the operator CLI: accounts and their standards, jobs, the allocation policy,
//! where every account stands, and the self-contained demo. Every error is one line on
//! stderr and exit code 2.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use hashgrid_common::message::{AdminRequest, AdminResponse, JobStatus, Policy, Status};
use hashgrid_common::{CompactTarget, Header, Target};
use hashgrid_coordinator::amount::{format_amount, parse_amount};

#[derive(Debug, Parser)]
#[command(name = "hashgrid", version, about = "Operate a hashgrid coordinator: accounts, standards, jobs, status")]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

/// How to reach the coordinator.
#[derive(Debug, Args)]
struct Connection {
    /// Coordinator address, e.g. 127.0.0.1:4433.
    #[arg(long, global = true, env = "HASHGRID_COORDINATOR")]
    coordinator: Option<SocketAddr>,
    /// The coordinator's certificate (DATA_DIR/cert.pem), pinned as the only trusted one.
    #[arg(long, global = true, env = "HASHGRID_CA")]
    ca: Option<PathBuf>,
    /// The admin token file (DATA_DIR/admin.token).
    #[arg(long, global = true, env = "HASHGRID_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sub-accounts and their standards.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Where every account and node stands.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Header templates searched for an account.
    #[command(subcommand)]
    Job(JobCommand),
    /// The allocation policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a coordinator, two nodes and three accounts in this process until every account
    /// is up to standard.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Add a sub-account with a computing-capability standard.
    Add {
        name: String,
        /// Work owed, in hashes, with an optional SI suffix: 500M, 2.5G, 1T.
        #[arg(long)]
        standard: String,
        /// Renew the standard every period, e.g. 1h, 30m, 1d.
        #[arg(long)]
        period: Option<String>,
        /// Service order for the sequential policy (default: after the last).
        #[arg(long)]
        order: Option<i64>,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Search a header template's nonces across the farm for an account.
    #[command(group = clap::ArgGroup::new("goal").required(true).args(["target", "bits"]))]
    Submit {
        #[arg(long)]
        account: String,
        /// 160 hex characters, wire order.
        #[arg(long)]
        header: String,
        /// 64 hex characters, most significant first.
        #[arg(long)]
        target: Option<String>,
        /// Compact bits, e.g. 1d00ffff.
        #[arg(long)]
        bits: Option<String>,
    },
    /// Progress and hits of a submitted job.
    Show {
        id: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// sequential | proportional
    Set { policy: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hashgrid: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hashgrid: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let req = match cli.command {
        Command::Demo(args) => return demo::run(args).await,
        Command::Account(AccountCommand::Add { name, standard, period, order }) => {
            let standard = parse_amount(&standard)?;
            let period_secs = period
                .map(|p| humantime::parse_duration(&p).with_context(|| format!("invalid --period {p:?}")))
                .transpose()?
                .map(|d| d.as_secs());
            AdminRequest::AccountAdd { name, standard, period_secs, order, chain: None }
        }
        Command::Account(AccountCommand::List { json }) => {
            let AdminResponse::Accounts(list) = request(&cli.conn, AdminRequest::AccountList).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                print_accounts(&list);
            }
            return Ok(());
        }
        Command::Status { json } => {
            let AdminResponse::Status(status) = request(&cli.conn, AdminRequest::Status).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", status_json(&status));
            } else {
                print_status(&status);
            }
            return Ok(());
        }
        Command::Job(JobCommand::Submit { account, header, target, bits }) => {
            let header = Header::from_hex(&header).context("--header")?;
            let target = match (target, bits) {
                (Some(t), _) => Target::from_hex(&t).context("--target")?,
                (None, Some(b)) => Target::from_compact(b.parse::<CompactTarget>().context("--bits")?)?,
                (None, None) => bail!("give --target or --bits"),
            };
            let AdminResponse::JobSubmitted { job } =
                request(&cli.conn, AdminRequest::JobSubmit { account, header, target }).await?
            else {
                bail!("unexpected reply")
            };
            println!("job {job} submitted");
            return Ok(());
        }
        Command::Job(JobCommand::Show { id, json }) => {
            let AdminResponse::Job(job) = request(&cli.conn, AdminRequest::JobShow { job: id }).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", job_json(&job));
            } else {
                print_job(&job);
            }
            return Ok(());
        }
        Command::Policy(PolicyCommand::Set { policy }) => {
            AdminRequest::PolicySet(policy.parse::<Policy>().map_err(anyhow::Error::msg)?)
        }
    };
    request(&cli.conn, req).await?;
    println!("ok");
    Ok(())
}

/// Sends one request; an `Error` reply becomes an error.
async fn request(conn: &Connection, req: AdminRequest) -> anyhow::Result<AdminResponse> {
    let addr = conn.coordinator.context("--coordinator (or HASHGRID_COORDINATOR) is required")?;
    let ca = conn.ca.as_ref().context("--ca (or HASHGRID_CA) is required")?;
    let token_file = conn.token_file.as_ref().context("--token-file (or HASHGRID_TOKEN_FILE) is required")?;
    let ca_pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let token = std::fs::read_to_string(token_file).with_context(|| format!("cannot read {}", token_file.display()))?;
    admin(addr, &ca_pem, token.trim(), req).await
}

/// One admin request to the coordinator at `addr`.
pub async fn admin(addr: SocketAddr, ca_pem: &[u8], token: &str, req: AdminRequest) -> anyhow::Result<AdminResponse> {
    let endpoint = hashgrid_node::net::client_endpoint(ca_pem)?;
    let response = hashgrid_node::net::admin_request(&endpoint, addr, token, &req).await?;
    endpoint.close(0u32.into(), b"");
    match response {
        AdminResponse::Error(e) => bail!("{e}"),
        other => Ok(other),
    }
}

fn print_accounts(list: &[hashgrid_common::message::AccountStatus]) {
    println!("{:<16} {:>5} {:>12} {:>12} {:>7} {:>8}", "ACCOUNT", "ORDER", "STANDARD", "DELIVERED", "DONE", "SHARES");
    for a in list {
        let pct = if a.standard == 0 { 100.0 } else { a.delivered as f64 * 100.0 / a.standard as f64 };
        println!(
            "{:<16} {:>5} {:>12} {:>12} {:>6.1}% {:>8}{}",
            a.name,
            a.order,
            format_amount(a.standard),
            format_amount(a.delivered),
            pct.min(999.9),
            a.shares,
            if a.up_to_standard { "  up to standard" } else { "" }
        );
    }
}

pub fn print_status(status: &Status) {
    println!("policy: {}", status.policy.as_str());
    print_accounts(&status.accounts);
    println!();
    println!("{:<16} {:<8} {:>12} {:>12} {:<16} VERSION", "NODE", "STATE", "RATE", "ANNOUNCED", "SERVING");
    for n in &status.nodes {
        println!(
            "{:<16} {:<8} {:>10}/s {:>10}/s {:<16} {}",
            n.name,
            n.state,
            format_amount(n.hashrate as u128) + "H",
            format_amount(n.announced_hashrate as u128) + "H",
            n.account.as_deref().unwrap_or("-"),
            n.software_version
        );
    }
}

/// `status --json`: numbers as JSON numbers.
pub fn status_json(status: &Status) -> serde_json::Value {
    serde_json::json!({
        "policy": status.policy.as_str(),
        "accounts": status.accounts.iter().map(|a| serde_json::json!({
            "name": a.name, "order": a.order, "standard": a.standard, "delivered": a.delivered,
            "up_to_standard": a.up_to_standard, "shares": a.shares, "period_secs": a.period_secs,
        })).collect::<Vec<_>>(),
        "nodes": status.nodes.iter().map(|n| serde_json::json!({
            "name": n.name, "state": n.state, "hashrate": n.hashrate, "announced_hashrate": n.announced_hashrate,
            "account": n.account, "version": n.software_version,
        })).collect::<Vec<_>>(),
    })
}

fn job_json(job: &JobStatus) -> serde_json::Value {
    serde_json::json!({
        "job": job.job, "account": job.account, "header": job.header.to_hex(), "target": job.target.to_hex(),
        "searched": job.searched, "in_flight": job.in_flight, "abandoned": job.abandoned, "total": job.total,
        "hits": job.hits.iter().map(|h| serde_json::json!({"version": h.version, "time": h.time, "nonce": h.nonce, "hash": h.hash.to_string()})).collect::<Vec<_>>(),
    })
}

fn print_job(job: &JobStatus) {
    println!("job {} for {}: header {}", job.job, job.account, job.header.to_hex());
    println!("target {}", job.target);
    println!(
        "searched {} of {} nonces ({:.2}%), in flight {}, abandoned {}",
        job.searched,
        job.total,
        job.searched as f64 * 100.0 / job.total as f64,
        job.in_flight,
        job.abandoned
    );
    for h in &job.hits {
        println!("  hit: version {:08x} time {} nonce {} hash {}", h.version, h.time, h.nonce, h.hash);
    }
}
