//! `hashgrid`, the operator CLI: accounts and their standards, jobs, the allocation policy,
//! where every account stands, and the self-contained demo. Every error is one line on
//! stderr and exit code 2.

#[cfg(feature = "demo")]
mod demo;
mod show;

use hashgrid_common::net::Address;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use hashgrid_common::message::{
    AdminRequest, AdminResponse, ChainParams, PageRequest, Policy, PoolSettings, Rollout, StandardBasis,
};
use hashgrid_common::stratum::{Password, PoolUrl};
use hashgrid_common::{CompactTarget, Header, Target};
use hashgrid_coordinator::amount::parse_amount;
use hashgrid_coordinator::core::upstream;

pub use show::{print_status, status_json};

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
    /// Coordinator address, HOST:PORT or IP:PORT, e.g. 127.0.0.1:4433; for a hot-standby
    /// pair, both, comma separated (the active one answers, a standby names it).
    #[arg(long, global = true, env = "HASHGRID_COORDINATOR", value_delimiter = ',')]
    coordinator: Vec<Address>,
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
        /// Redraw in place every INTERVAL (default 1s) until Ctrl-C.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "1s", conflicts_with = "json")]
        watch: Option<String>,
    },
    /// Send a share of new ranges to nodes of one software version (a canary), or end that.
    #[command(group = clap::ArgGroup::new("what").required(true).args(["version", "clear"]))]
    Rollout {
        /// The software version nodes announce (`node list` shows them).
        #[arg(long, requires = "percent")]
        version: Option<String>,
        /// Percent of new ranges for that version, 0-100 (0 rolls it back).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: Option<u8>,
        /// End the rollout: every node takes ranges again.
        #[arg(long)]
        clear: bool,
    },
    /// Header templates searched for an account.
    #[command(subcommand)]
    Job(JobCommand),
    /// The allocation policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Nodes: list, drain, promote, standby.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Chains the farm serves and their load.
    #[command(subcommand)]
    Chain(ChainCommand),
    /// Which chain and account every node serves now.
    Assignments {
        #[arg(long)]
        json: bool,
    },
    /// The hash-chained ledger of scheduling decisions.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Accounts' pools and their upstream sessions.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Run a coordinator, two nodes and three accounts in this process until every account
    /// is up to standard.
    #[cfg(feature = "demo")]
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
        /// The chain the account's work comes from (default: the built-in chain, `local`).
        #[arg(long)]
        chain: Option<String>,
        #[command(flatten)]
        pool: PoolArgs,
    },
    /// Set, change or remove (`--no-pool`) the account's pool.
    SetPool {
        name: String,
        #[command(flatten)]
        pool: PoolArgs,
        /// Remove the account's pool: its work comes from its chain again.
        #[arg(long, conflicts_with_all = ["pool", "user", "password", "backup_pool", "extranonce_subscribe", "backup_extranonce_subscribe"])]
        no_pool: bool,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The delivery receipt: every accepted share of the current period, re-hashed here.
    Receipt {
        name: String,
        #[command(flatten)]
        paging: Paging,
        #[arg(long)]
        json: bool,
    },
}

/// An account's pool, as `account add` and `account set-pool` take it. Its `Debug` never
/// shows the password.
#[derive(Args)]
struct PoolArgs {
    /// The account's Stratum V1 pool: stratum+tcp://HOST:PORT or stratum+ssl://HOST:PORT.
    #[arg(long, requires = "user")]
    pool: Option<String>,
    /// The pool's user (worker), e.g. alice.rig.
    #[arg(long, requires = "pool")]
    user: Option<String>,
    /// The pool's password (stored in the coordinator's database, never shown).
    #[arg(long, requires = "pool")]
    password: Option<String>,
    /// A backup pool, tried in order when the pool fails (repeatable).
    #[arg(long, requires = "pool")]
    backup_pool: Vec<String>,
    /// Send mining.extranonce.subscribe to the pool (some pools drop connections that send it).
    #[arg(long, requires = "pool")]
    extranonce_subscribe: bool,
    /// Send mining.extranonce.subscribe to the backup pools.
    #[arg(long, requires = "backup_pool")]
    backup_extranonce_subscribe: bool,
    /// What the standard is measured on: delivered (verified here) or accepted (by the pool).
    #[arg(long, value_name = "delivered|accepted")]
    standard_basis: Option<String>,
}

impl std::fmt::Debug for PoolArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolArgs")
            .field("pool", &self.pool)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| Password(String::new())))
            .field("backup_pool", &self.backup_pool)
            .field("extranonce_subscribe", &self.extranonce_subscribe)
            .field("backup_extranonce_subscribe", &self.backup_extranonce_subscribe)
            .field("standard_basis", &self.standard_basis)
            .finish()
    }
}

impl PoolArgs {
    /// The settings, with every URL checked here first (one line, exit 2, nothing sent).
    fn settings(&self) -> anyhow::Result<(Option<PoolSettings>, Option<StandardBasis>)> {
        let basis = self
            .standard_basis
            .as_deref()
            .map(|b| b.parse::<StandardBasis>().map_err(|e| anyhow::anyhow!("--standard-basis: {e}")))
            .transpose()?;
        let Some(pool) = &self.pool else { return Ok((None, basis)) };
        let urls: Vec<String> = std::iter::once(pool).chain(&self.backup_pool).cloned().collect();
        for url in &urls {
            url.parse::<PoolUrl>()?;
        }
        let settings = PoolSettings {
            urls,
            user: self.user.clone().unwrap_or_default(),
            password: self.password.clone().unwrap_or_default(),
            extranonce_subscribe: self.extranonce_subscribe,
            backup_extranonce_subscribe: self.backup_extranonce_subscribe,
        };
        // What the coordinator would refuse is refused here, before anything is sent.
        upstream::validate(&settings).map_err(anyhow::Error::msg)?;
        Ok((Some(settings), basis))
    }
}

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// Every account at a pool: state, pool, user, extranonce, difficulty, version mask, job
    /// age, delivered and accepted upstream, rejects by reason.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Every node with its state, rate, chain and devices.
    List {
        #[command(flatten)]
        paging: Paging,
        #[arg(long)]
        json: bool,
    },
    /// Finish the node's ranges in flight, then give it no more.
    Drain {
        name: String,
        /// Wait until it is drained, showing the ranges it still holds.
        #[arg(long)]
        wait: bool,
    },
    /// Make a standby, failed or drained node active.
    Promote { name: String },
    /// Make an active node a standby; its ranges are reassigned at once.
    Standby { name: String },
}

#[derive(Debug, Subcommand)]
enum ChainCommand {
    /// Add a chain: a local chain with its own parameters.
    Add {
        name: String,
        /// Transactions per header template.
        #[arg(long)]
        tx_per_template: u32,
        /// Bytes per second of work updates the chain generates (SI suffixes allowed: 2M).
        #[arg(long)]
        bit_rate: String,
        /// Block difficulty (1 = bits 1d00ffff).
        #[arg(long, default_value_t = 1.0)]
        difficulty: f64,
        /// Relative priority of the chain's load.
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
    },
    /// Chains with their load, nodes and accounts.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Entries, oldest first.
    Show {
        /// First sequence number to show (the same as `--after SINCE-1`).
        #[arg(long, conflicts_with = "after")]
        since: Option<u64>,
        /// Only entries naming this account.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        paging: Paging,
        #[arg(long)]
        json: bool,
    },
    /// Recompute the hash chain; exit 1 naming the first entry that does not match.
    Verify,
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
    /// Progress and hits of a submitted job, and its nonces in runs by fate.
    Show {
        id: u64,
        #[command(flatten)]
        paging: Paging,
        #[arg(long)]
        json: bool,
    },
}

/// Which part of a list to fetch. The coordinator sends lists in pages that fit one frame.
#[derive(Debug, Args)]
struct Paging {
    /// Start after this cursor: a ledger sequence number, a receipt share's number, a run's
    /// key (version << 32 | start nonce, plus one), a node's position in its list.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    after: u64,
    /// Fetch one page of at most N items, and name the next page's cursor on stderr (default:
    /// every page).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
}

impl Paging {
    /// Fetches the pages: one with `--limit`, else every page from `--after` on. `fetch`
    /// returns a page's items and the next page's cursor.
    async fn fetch<T>(
        &self,
        mut fetch: impl AsyncFnMut(PageRequest) -> anyhow::Result<(Vec<T>, Option<u64>)>,
    ) -> anyhow::Result<Vec<T>> {
        let mut page = PageRequest { after: self.after, limit: self.limit.unwrap_or(0) };
        let mut all = Vec::new();
        loop {
            let (items, next) = fetch(page).await?;
            all.extend(items);
            match next {
                Some(after) if self.limit.is_some() => {
                    eprintln!("hashgrid: more follow: --after {after}");
                    return Ok(all);
                }
                Some(after) if after > page.after => page.after = after,
                Some(after) => bail!("the coordinator's next page starts at {after}, not after {}", page.after),
                None => return Ok(all),
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// sequential | proportional
    Set { policy: String },
}

fn main() -> ExitCode {
    let cli = match hashgrid_common::cli::parse_command_line::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hashgrid: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<ReportedFailure>() => ExitCode::from(1),
        Err(err) => {
            eprintln!("hashgrid: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let req = match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => return demo::run(args).await,
        Command::Account(AccountCommand::Add { name, standard, period, order, chain, pool }) => {
            let standard = parse_amount(&standard)?;
            let period_secs = period
                .map(|p| humantime::parse_duration(&p).with_context(|| format!("invalid --period {p:?}")))
                .transpose()?
                .map(|d| d.as_secs());
            let (pool, basis) = pool.settings()?;
            // A new account's basis is `delivered` unless given.
            upstream::validate_basis(pool.as_ref(), basis.unwrap_or_default()).map_err(anyhow::Error::msg)?;
            let add = AdminRequest::AccountAdd { name: name.clone(), standard, period_secs, order, chain };
            if pool.is_none() && basis.is_none() {
                add
            } else {
                request(&cli.conn, add).await?;
                AdminRequest::AccountSetPool { name, pool, basis }
            }
        }
        Command::Account(AccountCommand::SetPool { name, pool, no_pool }) => {
            let (pool, basis) = pool.settings()?;
            if pool.is_none() && !no_pool {
                bail!("give --pool URL --user USER (or --no-pool to remove the account's pool)");
            }
            AdminRequest::AccountSetPool { name, pool, basis }
        }
        Command::Pool(PoolCommand::List { json }) => {
            let AdminResponse::Pools(list) = request(&cli.conn, AdminRequest::PoolList).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                show::print_pools(&list);
            }
            return Ok(());
        }
        Command::Account(AccountCommand::Receipt { name, paging, json }) => {
            // The first page fixes the cut; the others continue at it.
            let mut first: Option<hashgrid_common::message::Receipt> = None;
            let shares = paging
                .fetch(async |page| {
                    let cut = first.as_ref().map(|r| r.cut);
                    let req = AdminRequest::AccountReceipt { name: name.clone(), page, cut };
                    let AdminResponse::Receipt(mut receipt) = request(&cli.conn, req).await? else {
                        bail!("unexpected reply")
                    };
                    let page = (std::mem::take(&mut receipt.shares), receipt.next);
                    first.get_or_insert(receipt);
                    Ok(page)
                })
                .await?;
            let receipt = hashgrid_common::message::Receipt { shares, next: None, ..first.context("no reply")? };
            let whole = paging.limit.is_none() && paging.after == 0;
            let check = show::check_receipt(&receipt, whole);
            if json {
                println!("{}", show::receipt_json(&receipt, &check, whole)?);
            } else {
                show::print_receipt(&receipt, &check, whole);
            }
            if let Err(problem) = check {
                eprintln!("hashgrid: receipt does not check out: {problem}");
                return Err(ReportedFailure.into());
            }
            return Ok(());
        }
        Command::Node(NodeCommand::List { paging, json }) => {
            let nodes = paging
                .fetch(async |page| match request(&cli.conn, AdminRequest::NodeList { page }).await? {
                    AdminResponse::Nodes { nodes, next } => Ok((nodes, next)),
                    _ => bail!("unexpected reply"),
                })
                .await?;
            if json {
                println!("{}", serde_json::Value::Array(nodes.iter().map(show::node_json).collect()));
            } else {
                show::print_nodes(&nodes);
            }
            return Ok(());
        }
        Command::Node(NodeCommand::Drain { name, wait }) => {
            request(&cli.conn, AdminRequest::NodeDrain { name: name.clone() }).await?;
            if wait {
                wait_drained(&cli.conn, &name).await?;
            }
            println!("ok");
            return Ok(());
        }
        Command::Node(NodeCommand::Promote { name }) => AdminRequest::NodePromote { name },
        Command::Node(NodeCommand::Standby { name }) => AdminRequest::NodeStandby { name },
        Command::Chain(ChainCommand::Add { name, tx_per_template, bit_rate, difficulty, weight }) => {
            let bit_rate = u64::try_from(parse_amount(&bit_rate).context("--bit-rate")?)
                .map_err(|_| anyhow::anyhow!("--bit-rate is too large"))?;
            AdminRequest::ChainAdd(ChainParams { name, tx_per_template, bit_rate, difficulty, weight })
        }
        Command::Chain(ChainCommand::List { json }) => {
            let AdminResponse::Chains(chains) = request(&cli.conn, AdminRequest::ChainList).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", serde_json::Value::Array(chains.iter().map(show::chain_json).collect()));
            } else {
                show::print_chains(&chains);
            }
            return Ok(());
        }
        Command::Assignments { json } => {
            let AdminResponse::Assignments(list) = request(&cli.conn, AdminRequest::Assignments).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                show::print_assignments(&list);
            }
            return Ok(());
        }
        Command::Ledger(LedgerCommand::Show { since, account, mut paging, json }) => {
            if let Some(since) = since {
                paging.after = since.saturating_sub(1);
            }
            let entries = paging
                .fetch(async |page| {
                    match request(&cli.conn, AdminRequest::LedgerShow { account: account.clone(), page }).await? {
                        AdminResponse::Ledger { entries, next } => Ok((entries, next)),
                        _ => bail!("unexpected reply"),
                    }
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string(&entries.iter().map(show::ledger_json).collect::<Vec<_>>())?);
            } else {
                show::print_ledger(&entries);
            }
            return Ok(());
        }
        Command::Ledger(LedgerCommand::Verify) => {
            let AdminResponse::LedgerVerified(verdict) = request(&cli.conn, AdminRequest::LedgerVerify).await? else {
                bail!("unexpected reply")
            };
            match verdict.first_bad {
                None => println!("ledger ok: {} entries, every hash and link matches", verdict.entries),
                Some((seq, why)) => {
                    eprintln!("hashgrid: ledger verify failed at entry {seq}: {why}");
                    return Err(ReportedFailure.into());
                }
            }
            return Ok(());
        }
        Command::Account(AccountCommand::List { json }) => {
            let AdminResponse::Accounts(list) = request(&cli.conn, AdminRequest::AccountList).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                show::print_accounts(&list);
            }
            return Ok(());
        }
        Command::Status { json: _, watch: Some(interval) } => {
            let every =
                humantime::parse_duration(&interval).with_context(|| format!("invalid --watch {interval:?}"))?;
            anyhow::ensure!(every >= std::time::Duration::from_millis(100), "--watch must be at least 100ms");
            return watch(&cli.conn, every).await;
        }
        Command::Rollout { version, percent, clear: _ } => {
            let rollout = version.map(|version| Rollout { version, percent: percent.unwrap_or(0) });
            AdminRequest::RolloutSet(rollout)
        }
        Command::Status { json, watch: None } => {
            let AdminResponse::Status(status) = request(&cli.conn, AdminRequest::Status).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", status_json(&status)?);
            } else {
                if cli.conn.coordinator.len() > 1 {
                    println!("active coordinator: {}", active(&cli.conn).await?);
                }
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
        Command::Job(JobCommand::Show { id, paging, json }) => {
            // The counts and hits of the first page, the runs of every page.
            let mut first: Option<hashgrid_common::message::JobStatus> = None;
            let runs = paging
                .fetch(async |page| {
                    let AdminResponse::Job { status: mut job, next } =
                        request(&cli.conn, AdminRequest::JobShow { job: id, page }).await?
                    else {
                        bail!("unexpected reply")
                    };
                    let runs = std::mem::take(&mut job.runs);
                    first.get_or_insert(job);
                    Ok((runs, next))
                })
                .await?;
            let job = hashgrid_common::message::JobStatus { runs, ..first.context("no reply")? };
            if json {
                println!("{}", show::job_json(&job));
            } else {
                show::print_job(&job);
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

/// `status --watch`: redraws the status in place (clear screen, home) every `every`, on one
/// connection, until Ctrl-C; a lost coordinator is shown and retried, not fatal.
async fn watch(conn: &Connection, every: std::time::Duration) -> anyhow::Result<()> {
    use std::io::Write;
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let shown = match request(conn, AdminRequest::Status).await {
            Ok(AdminResponse::Status(status)) => show::status_text(&status),
            Ok(_) => "unexpected reply\n".to_string(),
            Err(e) => format!("{e:#}\n(retrying every {})\n", humantime::format_duration(every)),
        };
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let mut out = std::io::stdout().lock();
        write!(out, "\x1b[H\x1b[2J{now}  (every {}, Ctrl-C to stop)\n\n{shown}", humantime::format_duration(every))?;
        out.flush()?;
    }
}

/// `node drain --wait`: a spinner with the ranges the node still holds, until it has none.
async fn wait_drained(conn: &Connection, name: &str) -> anyhow::Result<()> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    loop {
        let AdminResponse::Assignments(list) = request(conn, AdminRequest::Assignments).await? else {
            bail!("unexpected reply")
        };
        let Some(node) = list.iter().find(|a| a.node == name) else {
            spinner.finish_and_clear();
            bail!("node {name:?} is gone before it drained");
        };
        if node.state == "drained" {
            spinner.finish_with_message(format!("{name} drained"));
            return Ok(());
        }
        spinner.set_message(format!("draining {name}: {} range(s) in flight", node.ranges));
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A check that ran and failed (a tampered ledger, a receipt that does not add up): already
/// reported on stderr; exit code 1, apart from the usage and connection errors (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("check failed")]
struct ReportedFailure;

/// Sends one request to the active coordinator of `--coordinator`'s list; an `Error` reply
/// becomes an error.
async fn request(conn: &Connection, req: AdminRequest) -> anyhow::Result<AdminResponse> {
    Ok(send(conn, req).await?.1)
}

/// The address of the coordinator that answers (the active one of a pair).
async fn active(conn: &Connection) -> anyhow::Result<Address> {
    Ok(send(conn, AdminRequest::Status).await?.0)
}

/// Tries the addresses (`net::Addresses::try_each`: in turn, and where a standby's close
/// points): the first that answers, and its answer; else the last error.
async fn send(conn: &Connection, req: AdminRequest) -> anyhow::Result<(Address, AdminResponse)> {
    anyhow::ensure!(!conn.coordinator.is_empty(), "--coordinator (or HASHGRID_COORDINATOR) is required");
    let ca = conn.ca.as_ref().context("--ca (or HASHGRID_CA) is required")?;
    let token_file = conn.token_file.as_ref().context("--token-file (or HASHGRID_TOKEN_FILE) is required")?;
    let ca_pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let token = std::fs::read_to_string(token_file).with_context(|| format!("cannot read {}", token_file.display()))?;
    let mut addresses = hashgrid_common::net::Addresses::new(conn.coordinator.iter().cloned());
    addresses
        .try_each(
            |addr| admin(addr, &ca_pem, token.trim(), req.clone()),
            |e| e.downcast_ref::<hashgrid_common::net::NetError>(),
        )
        .await
}

/// One admin request to the coordinator at `addr` (resolved now, if a host name).
pub async fn admin(addr: Address, ca_pem: &[u8], token: &str, req: AdminRequest) -> anyhow::Result<AdminResponse> {
    let endpoint = hashgrid_common::net::client_endpoint(ca_pem)?;
    let response = hashgrid_common::net::admin_request(&endpoint, addr, token, &req).await?;
    endpoint.close(0u32.into(), b"");
    match response {
        AdminResponse::Error(e) => bail!("{e}"),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let cli = Cli::try_parse_from([
            "hashgrid",
            "account",
            "add",
            "alice",
            "--standard",
            "1T",
            "--pool",
            "stratum+tcp://pool:1",
            "--user",
            "alice.rig",
            "--password",
            "hunter2-secret",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(shown.contains("alice.rig") && !shown.contains("hunter2-secret"), "{shown}");
    }
}
