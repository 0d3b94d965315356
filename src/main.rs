//! The `switchboard` binary: parses the command line and runs the library.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use switchboard::config::{Config, Overrides};
use switchboard::devredis::RedisServer;
use switchboard::gateway::Gateway;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Scheduler gateway for live speech translation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway for development: starts a private redis-server unless a Redis URL is given.
    Dev {
        /// TOML config file.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        /// Also run six simulated nodes in two regions and a three-language room that keeps
        /// talking; prints the dashboard's address.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run a gateway in production against an external Redis.
    Serve {
        /// TOML config file.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Measure throughput, latency, Redis cost, CPU and memory with simulated nodes and clients.
    Bench(cli::bench::BenchArgs),
    /// Check, test, push and measure policy components.
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
    /// Simulated worker nodes against a running gateway.
    NodeSim(cli::sim::NodeSimArgs),
    /// Simulated clients (one-way sessions and rooms that keep talking) against a running gateway.
    ClientSim(cli::sim::ClientSimArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Loads the config (file, then `SWITCHBOARD_*`, then flags), validates it and prints the
    /// result without secrets; exits with 1 and the reason when it is invalid.
    Check {
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
}

/// mimalloc rather than glibc's malloc: a task allocates and frees a few hundred small buffers
/// (frames, JSON, script arguments) across two worker threads, and glibc's arenas spent ~15 % of
/// the gateway's CPU on it (`perf record`, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Dev { config, demo, overrides } => {
            let mut config = Config::load(config.as_deref(), &overrides)?;
            // A token of its own unless one is configured, written where `switchboard policy …`
            // looks for it, so the first push works (the dashboard and the CLI need one to change
            // anything).
            let generated = config.admin_token.is_none();
            if generated {
                config.admin_token = Some(switchboard::store::new_id("", 24).to_ascii_lowercase());
            }
            let token = config.admin_token.clone();
            let token_file =
                switchboard::admin_client::dev_token_file(&format!("http://{}", config.admin_listen));
            if let (true, Some(token)) = (generated, &token) {
                write_dev_token(&token_file, token)?;
            }
            switchboard::init_tracing(config.log_format);
            let _redis = match &config.redis_url {
                Some(_) => None,
                None => {
                    let redis = RedisServer::start()?;
                    tracing::info!(url = %redis.url(), "Started a private redis-server.");
                    config.redis_url = Some(redis.url());
                    Some(redis)
                }
            };
            let listen = config.listen;
            run(config, |addr, admin| {
                println!("switchboard dev gateway on http://{addr}");
                println!("  nodes:     ws://{addr}/ws/node");
                println!("  clients:   ws://{addr}/ws/session");
                println!("  ready:     http://{addr}/readyz");
                println!("  admin:     http://{admin}/admin/policies (OpenAPI: /admin/openapi.json)");
                match &token {
                    Some(token) => println!("  dashboard: http://{admin}/dashboard#token={token}"),
                    None => println!("  dashboard: http://{admin}/dashboard"),
                }
                if generated && let Some(token) = &token {
                    println!("  admin token: {token} (in {}; `switchboard policy …` finds it)", token_file.display());
                }
                println!("  metrics:   http://{admin}/metrics");
                if demo {
                    println!("demo: 6 simulated nodes (regions eu, us), a room speaking en/zh/ja, 3 one-way sessions");
                    let url = format!("ws://{addr}");
                    tokio::spawn(async move {
                        if let Err(err) = cli::sim::demo(url, CancellationToken::new()).await {
                            eprintln!("demo: {err:#}");
                        }
                    });
                }
                println!("Ctrl-C stops it (and its redis-server).");
            })
            .await
            .with_context(|| format!("gateway on {listen}"))
        }
        Command::Serve { config, overrides } => {
            let config = Config::load(config.as_deref(), &overrides)?;
            switchboard::init_tracing(config.log_format);
            if config.redis_url.is_none() {
                bail!(
                    "serve needs a Redis URL: --redis-url, SWITCHBOARD_REDIS_URL or redis_url in the config file"
                );
            }
            run(config, |_, _| {}).await
        }
        Command::Bench(args) => {
            switchboard::init_tracing(switchboard::config::LogFormat::Text);
            cli::bench::run(args).await
        }
        Command::Policy(command) => {
            switchboard::init_tracing(switchboard::config::LogFormat::Text);
            cli::policy::run(command).await
        }
        Command::NodeSim(args) => cli::sim::node_sim(args).await,
        Command::ClientSim(args) => cli::sim::client_sim(args).await,
        Command::Config(ConfigCommand::Check { config, overrides }) => {
            let config = Config::load(config.as_deref(), &overrides)?;
            println!("{}", config.describe());
            // Where each cell's keys live, for placing cells on Redis Cluster primaries.
            for cell in 0..config.scheduler.cells {
                let tag = switchboard::store::cell_tag(cell);
                println!("# cell {cell}: tag {{{tag}}}, slot {}", switchboard::store::slot(&tag));
            }
            println!("config is valid");
            Ok(())
        }
    }
}

/// Binds, connects and serves until Ctrl-C or SIGTERM.
async fn run(config: Config, announce: impl FnOnce(SocketAddr, SocketAddr)) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await.context("binding the listener")?;
    let admin = TcpListener::bind(config.admin_listen).await.context("binding the admin listener")?;
    let admin_addr = admin.local_addr()?;
    let shutdown = CancellationToken::new();
    let gateway = Gateway::bind(listener, config, shutdown.clone()).await?.with_admin(admin);
    announce(gateway.local_addr()?, admin_addr);
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down.");
        signals.cancel();
    });
    gateway.serve().await?;
    Ok(())
}

async fn wait_for_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Writes `dev`'s generated admin token, readable by this user only.
fn write_dev_token(file: &std::path::Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("writing {}", file.display()))?;
    out.write_all(token.as_bytes())?;
    Ok(())
}
