//! A private `redis-server` child on a free port with a temporary directory: what `switchboard dev`,
//! the tests and the benchmark run against when no Redis URL is given. Killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DevRedisError {
    #[error(
        "redis-server is not installed and cannot be installed here: run `sudo apt-get install -y redis-server`"
    )]
    NotInstalled,
    #[error("redis-server did not start: {0}")]
    Start(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis-server on a free loopback port, installing it first when missing and allowed.
    pub fn start() -> Result<Self, DevRedisError> {
        ensure_installed()?;
        let mut dir = tempfile::Builder::new().prefix("switchboard-redis-").tempdir()?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let child = spawn(port, dir.path())?;
            let mut server = Self { child, port, dir };
            match server.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last = format!("{e}; log: {}", server.log());
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    dir = tempfile::Builder::new().prefix("switchboard-redis-").tempdir()?;
                }
            }
        }
        Err(DevRedisError::Start(last))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log, for test failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), DevRedisError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(DevRedisError::Start(format!("exited with {status}")));
            }
            if ping(self.port).is_ok() {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(DevRedisError::Start("no PONG within 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl RedisServer {
    /// Kills redis-server (`kill -9`) and starts an empty one on the same port, as after a crash
    /// of a Redis without persistence.
    pub fn restart_empty(&mut self) -> Result<(), DevRedisError> {
        self.kill();
        self.start_again()
    }

    /// `kill -9`: the port stops answering until [`RedisServer::start_again`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts an empty redis-server on the same port after [`RedisServer::kill`]; returns once it
    /// answers PING.
    pub fn start_again(&mut self) -> Result<(), DevRedisError> {
        // The port is free again once the old process is gone; retry while the kernel lets go.
        let mut last = None;
        for _ in 0..50 {
            self.child = spawn(self.port, self.dir.path())?;
            match self.wait_ready(Duration::from_secs(5)) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.unwrap_or_else(|| DevRedisError::Start("restart failed".into())))
    }

    /// Freezes redis-server (`SIGSTOP`): connections stay open, nothing is answered.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// Thaws it (`SIGCONT`).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").arg(sig).arg(pid.to_string()).status();
    assert!(status.is_ok_and(|s| s.success()), "kill {sig} {pid}");
}

fn spawn(port: u16, dir: &std::path::Path) -> std::io::Result<Child> {
    spawn_with(port, dir, &["--appendonly", "no"])
}

/// A cluster primary keeps an append-only file, synced on every write, so a restart — even after
/// `kill -9` — brings its data back (these primaries have no replicas to fail over to).
fn spawn_cluster_node(port: u16, dir: &std::path::Path) -> std::io::Result<Child> {
    let cluster = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ];
    spawn_with(port, dir, &[&cluster[..], &["--cluster-node-timeout", "5000"]].concat())
}

fn spawn_with(port: u16, dir: &std::path::Path, extra: &[&str]) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--protected-mode", "no"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(port: u16) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    if line.starts_with("+PONG") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("unexpected reply {line:?}")))
    }
}

/// Starts one cluster node on a free port and waits for its PONG. A cluster node also listens on
/// its port + 10000 (the cluster bus), and a port found free can be taken before the server binds
/// it (tests start clusters side by side): a node that exits at start is tried again on another
/// port.
fn start_cluster_node(dir: &std::path::Path) -> Result<(u16, Child), DevRedisError> {
    let mut why = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        if port > u16::MAX - 10_000 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
            continue;
        }
        let mut child = spawn_cluster_node(port, dir)?;
        let answered =
            wait(Duration::from_secs(10), || ping(port).is_ok() || matches!(child.try_wait(), Ok(Some(_))));
        if answered.is_ok() && ping(port).is_ok() {
            return Ok((port, child));
        }
        let _ = child.kill();
        let _ = child.wait();
        why = format!("cluster node {port} did not answer");
        // What the failed node wrote (its nodes.conf names its port) must not follow the next one.
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
    }
    Err(DevRedisError::Start(why))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs redis-server with apt-get when it is missing and we are root; once per process.
fn ensure_installed() -> Result<(), DevRedisError> {
    static INSTALL: Once = Once::new();
    if on_path("redis-server") {
        return Ok(());
    }
    INSTALL.call_once(|| {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if root && on_path("apt-get") {
            eprintln!("redis-server is missing: installing it with apt-get");
            let install = || {
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "redis-server"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !install() {
                let _ = Command::new("apt-get").args(["update", "-q"]).stdout(Stdio::null()).status();
                install();
            }
        }
    });
    if on_path("redis-server") { Ok(()) } else { Err(DevRedisError::NotInstalled) }
}

/// A local Redis Cluster of `primaries` primaries (no replicas) on free ports, for the cluster
/// tests and benchmarks: `redis-server --cluster-enabled yes` per primary, then
/// `redis-cli --cluster create`, then wait for `cluster_state:ok` on every node. Each primary keeps
/// an append-only file, so [`RedisCluster::restart`] brings it back with its data. Killed on drop.
pub struct RedisCluster {
    nodes: Vec<(u16, Child)>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start(primaries: usize) -> Result<Self, DevRedisError> {
        ensure_installed()?;
        let dir = tempfile::Builder::new().prefix("switchboard-cluster-").tempdir()?;
        let mut nodes = Vec::new();
        for i in 0..primaries {
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(start_cluster_node(&node_dir)?);
        }
        let cluster = Self { nodes, dir };
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !created.status.success() {
            let why = String::from_utf8_lossy(&created.stderr).into_owned();
            return Err(DevRedisError::Start(format!("redis-cli --cluster create: {why}")));
        }
        for (port, _) in &cluster.nodes {
            wait(Duration::from_secs(20), || cluster_ok(*port)).map_err(|_| {
                DevRedisError::Start(format!("cluster node {port} never reached cluster_state:ok"))
            })?;
        }
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>/` of each primary.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|(port, _)| format!("redis://127.0.0.1:{port}/")).collect()
    }

    /// The `redis_url` naming the whole cluster: every primary as a seed, comma-separated.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// Stops primary `i` (SIGTERM: it writes its append-only file) and starts it again on the same
    /// port with the same data and cluster identity; returns once the cluster is ok again.
    pub fn restart(&mut self, i: usize) -> Result<(), DevRedisError> {
        signal(self.nodes[i].1.id(), "-TERM");
        let _ = self.nodes[i].1.wait();
        self.start_node(i)
    }

    /// `kill -9` of primary `i`: its slots stop answering until [`RedisCluster::start_node`].
    pub fn kill(&mut self, i: usize) {
        let _ = self.nodes[i].1.kill();
        let _ = self.nodes[i].1.wait();
    }

    /// Starts primary `i` again after a stop, with its data (every write is in its append-only
    /// file) and cluster identity; returns once the cluster is ok again.
    pub fn start_node(&mut self, i: usize) -> Result<(), DevRedisError> {
        let (port, child) = &mut self.nodes[i];
        *child = spawn_cluster_node(*port, &self.dir.path().join(format!("n{i}")))?;
        let port = *port;
        wait(Duration::from_secs(10), || ping(port).is_ok())
            .map_err(|_| DevRedisError::Start(format!("cluster node {port} did not come back")))?;
        for (port, _) in &self.nodes {
            wait(Duration::from_secs(20), || cluster_ok(*port))
                .map_err(|_| DevRedisError::Start(format!("cluster node {port} not ok after a restart")))?;
        }
        Ok(())
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(port, _)| *port).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait(limit: Duration, mut ready: impl FnMut() -> bool) -> Result<(), ()> {
    let start = std::time::Instant::now();
    while !ready() {
        if start.elapsed() > limit {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn cluster_ok(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
}
