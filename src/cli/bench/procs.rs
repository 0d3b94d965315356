//! The gateways a benchmark runs against: child processes it starts (or one given with `--url`),
//! their CPU time, and waiting until one serves.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchboard::admin_client;
use switchboard::histogram::Histogram;
use switchboard::sim::client::{Load, Session};
use switchboard::sim::node::{self, NodeSpec};
use tokio_util::sync::CancellationToken;

/// A gateway child process.
pub(in crate::cli) struct GatewayProc {
    pub(in crate::cli) child: Option<Child>,
    pub(in crate::cli) ws: String,
    /// Its admin URL; None for a scheduler given with `--url` alone.
    pub(in crate::cli) admin: Option<String>,
}

impl GatewayProc {
    pub(in crate::cli) async fn start(redis_url: &str) -> anyhow::Result<Self> {
        Self::start_with(redis_url, 1, None).await
    }

    pub(in crate::cli) async fn start_with_cells(redis_url: &str, cells: u32) -> anyhow::Result<Self> {
        Self::start_with(redis_url, cells, None).await
    }

    /// A gateway on `redis_url` with `cells` cells, and the settings of `config` if given.
    pub(in crate::cli) async fn start_with(
        redis_url: &str,
        cells: u32,
        config: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let (port, admin_port) = (free_port()?, free_port()?);
        let mut command = Command::new(std::env::current_exe()?);
        if let Some(config) = config {
            command.arg("serve").arg("--config").arg(config);
        } else {
            command.arg("serve");
        }
        let child = command
            .args(["--listen", &format!("127.0.0.1:{port}"), "--cells", &cells.to_string()])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}"), "--redis-url", redis_url])
            // Every simulated peer comes from 127.0.0.1 and may send as fast as it can.
            .args(["--max-connections-per-address", "0", "--max-messages-per-second", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a gateway")?;
        let gw = Self {
            child: Some(child),
            ws: format!("ws://127.0.0.1:{port}"),
            admin: Some(format!("http://127.0.0.1:{admin_port}")),
        };
        let start = Instant::now();
        let readyz = format!("http://127.0.0.1:{admin_port}/readyz");
        loop {
            if let Ok((200, _)) = admin_client::request("GET", &readyz, None, b"").await {
                return Ok(gw);
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the gateway did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(in crate::cli) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(in crate::cli) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// CPU time (user + system) of a process, in µs.
pub(in crate::cli) fn cpu_micros(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    ticks * 10_000 // USER_HZ is 100 on Linux
}

pub(in crate::cli) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until the scheduler at `ws` gives a node work: a node registers, a session sends
/// utterances, and one result comes back (the fleet's old scheduler takes up to ~15 s after a
/// node registers before it assigns it anything). 60 s at most.
pub(in crate::cli) async fn wait_serving(ws: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let stop = CancellationToken::new();
    let _stop_node = stop.clone().drop_guard();
    let spec = NodeSpec::new(&["zh"], &["en"], 4);
    let answered = Arc::new(AtomicU64::new(0));
    let (_, serve) = node::start(&format!("{ws}/ws/node"), spec, answered, stop.clone())
        .await
        .with_context(|| format!("registering a node at {ws}/ws/node"))?;
    tokio::spawn(serve);
    while Instant::now() < deadline {
        let session = Session::open(&format!("{ws}/ws/session"), "zh", "en", "AAAA".into())
            .await
            .with_context(|| format!("opening a session at {ws}/ws/session"))?;
        let try_stop = CancellationToken::new();
        let run = tokio::spawn(session.run(
            Load::Closed { in_flight: 1 },
            Arc::new(Histogram::default()),
            try_stop.clone(),
            Duration::from_secs(1),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        try_stop.cancel();
        if run.await.is_ok_and(|t| t.results > 0) {
            return Ok(());
        }
    }
    bail!("{ws} gave no node work within 60 s")
}
