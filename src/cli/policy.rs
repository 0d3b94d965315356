//! `switchboard policy …`: a policy author's and an operator's tools — new, build, check, test,
//! replay, bench, push, status, promote, rollback, shadow, canary. Over 400 lines because it is
//! the command table: each subcommand is its declaration and a short handler (scaffolding is
//! `scaffold.rs`, fixtures and replay `fixtures.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use switchboard::policy::{
    self, Compiled, Limits, Policies, PolicyHost, Role, Stats, artifacts, samples, sha256_hex,
};
use tokio_util::sync::CancellationToken;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Write a new policy crate NAME (in --dir, default here) with its own copy of the WIT, a
    /// working example and a README.
    New {
        name: String,
        /// node-selection, room-routing or admission.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a policy crate (cargo for wasm32-unknown-unknown, then the component, in-process: no
    /// other tool) into DIR/NAME.wasm, and check it like the gateway's loader.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Validate a component like the gateway's loader does; print its world, imports and exports.
    Check {
        file: PathBuf,
        /// node-selection, room-routing or admission; tried each when absent.
        #[arg(long)]
        role: Option<String>,
    },
    /// Run a component on sample inputs (decision, time and memory per call) and, with
    /// --fixtures, on your own cases (JSON; exits non-zero when one fails).
    Test {
        file: PathBuf,
        #[arg(long)]
        role: Option<String>,
        /// Candidates per node-selection call.
        #[arg(long, default_value_t = 16)]
        candidates: usize,
        #[arg(long, default_value_t = 1000)]
        calls: usize,
        /// Fixture files: inputs and the expected ranking or routes (docs/policies.md, "Test").
        #[arg(long, num_args = 1..)]
        fixtures: Vec<PathBuf>,
        /// Print the inputs each fixture gave the policy, as the policy sees them, and its answer.
        #[arg(long)]
        explain: bool,
    },
    /// Push a component to a running gateway's admin API (every gateway then loads it).
    Push {
        file: PathBuf,
        #[arg(long)]
        role: String,
        /// Run it beside the active version without enforcing it.
        #[arg(long, conflicts_with = "canary")]
        shadow: bool,
        /// Give it this share of the calls (`5%`), watched by every gateway and rolled back on
        /// its own past the `policy.canary_*` limits; `policy promote` makes it active.
        #[arg(long, value_name = "PERCENT")]
        canary: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// The canary: `canary abort --role R` ends it on every gateway.
    Canary {
        #[command(subcommand)]
        action: CanaryAction,
    },
    /// Run a node-selection version on the decisions a running gateway recently made (their
    /// inputs kept by `policy.replay_every`) and report how often it would decide otherwise.
    Replay {
        file: PathBuf,
        #[command(flatten)]
        admin: Admin,
    },
    /// Each role's active and shadow versions on this gateway (calls, fallbacks, breaker) and
    /// what every gateway follows.
    Status {
        #[command(flatten)]
        admin: Admin,
    },
    /// Make the shadow version active on every gateway.
    Promote {
        #[arg(long)]
        role: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Make the previous active version active again on every gateway.
    Rollback {
        #[arg(long)]
        role: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// The shadow version: `shadow clear --role R` stops running it.
    Shadow {
        #[command(subcommand)]
        action: ShadowAction,
    },
    /// Measure µs per decision (16 and 256 candidates) and the time from a file write to active.
    Bench {
        /// A node-selection component to measure besides the embedded default.
        file: Option<PathBuf>,
        #[arg(long, default_value_t = 5000)]
        calls: usize,
    },
}

#[derive(clap::Subcommand)]
pub enum CanaryAction {
    /// End the role's canary on every gateway.
    Abort {
        #[arg(long)]
        role: String,
        #[command(flatten)]
        admin: Admin,
    },
}

#[derive(clap::Subcommand)]
pub enum ShadowAction {
    /// Stop running the role's shadow version on every gateway.
    Clear {
        #[arg(long)]
        role: String,
        #[command(flatten)]
        admin: Admin,
    },
}

/// Where the admin API is, and its token: `--token`, `SWITCHBOARD_ADMIN_TOKEN`, or the one
/// `switchboard dev` wrote for that address.
#[derive(clap::Args)]
pub struct Admin {
    #[arg(long, env = "SWITCHBOARD_ADMIN_URL", default_value = "http://127.0.0.1:9090")]
    admin_url: String,
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Admin {
    /// One admin request; its status and body, printed; an error unless 200.
    async fn call(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<serde_json::Value> {
        let base = self.admin_url.trim_end_matches('/');
        let token = self.token.clone().or_else(|| read_dev_token(base));
        let (status, body) =
            switchboard::admin_client::request(method, &format!("{base}{path}"), token.as_deref(), body)
                .await
                .with_context(|| format!("admin API at {base}"))?;
        if status != 200 {
            let hint = if status == 401 || status == 403 {
                " (give --token or SWITCHBOARD_ADMIN_TOKEN)"
            } else {
                ""
            };
            bail!("{method} {path}: {status} {body}{hint}");
        }
        Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
    }
}

fn read_dev_token(admin_base_url: &str) -> Option<String> {
    let file = switchboard::admin_client::dev_token_file(admin_base_url);
    std::fs::read_to_string(file).ok().map(|t| t.trim().to_owned())
}

fn print_status(body: &serde_json::Value) {
    let short = |v: &serde_json::Value| switchboard::policy::short(v.as_str().unwrap_or("")).to_owned();
    for role in body["policies"].as_array().into_iter().flatten() {
        let name = role["role"].as_str().unwrap_or("?");
        println!("{name}");
        for slot in ["active", "shadow", "canary"] {
            let v = &role[slot];
            if v.is_null() {
                continue;
            }
            let breaker = match v["suspended_until_ms"].as_u64() {
                Some(until) => format!(", suspended until {until} (breaker)"),
                None => String::new(),
            };
            let agreement =
                v["agreement"].as_f64().map(|a| format!(", agreement {a:.3}")).unwrap_or_default();
            let share = if slot == "canary" {
                format!(", {} % of the calls", role["canary_share"])
            } else {
                String::new()
            };
            println!(
                "  {slot:<7} {} ({}) calls {} fallbacks {} p50 {} µs p99 {} µs{agreement}{share}{breaker}",
                short(&v["sha256"]),
                v["source"].as_str().unwrap_or(""),
                v["calls"],
                v["fallbacks"],
                v["p50_us"],
                v["p99_us"],
            );
            if name == "node-selection" {
                println!(
                    "          its tasks: {} delivered, {} failed, {} timed out, result p99 {} ms",
                    v["tasks_ok"], v["tasks_failed"], v["tasks_timed_out"], v["result_p99_ms"]
                );
            }
        }
        if let Some(rejected) = role["last_rejection"].as_object() {
            println!("  last rejected: {} {}", rejected["sha256"].as_str().unwrap_or(""), rejected["reason"]);
        }
        let stored = &body["stored"][name];
        println!(
            "  stored (every gateway follows): active {} shadow {} canary {} version {}",
            short(&stored["active"]),
            short(&stored["shadow"]),
            short(&stored["canary"]),
            stored["version"]
        );
        for e in stored["events"].as_array().into_iter().flatten().take(5) {
            let reason = e["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
            let ago = switchboard::protocol::now_ms().saturating_sub(e["at_ms"].as_u64().unwrap_or(0)) / 1000;
            println!(
                "    {ago:>5} s ago  {:<14} {} by {}{reason}",
                e["change"].as_str().unwrap_or(""),
                short(&e["sha256"]),
                e["by"].as_str().unwrap_or("")
            );
        }
    }
}

fn host() -> PolicyHost {
    PolicyHost::new(Limits { deadline: Duration::from_millis(5), memory_bytes: 16 << 20 }, Vec::new())
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// The role given, or the one world the component implements.
fn compile(host: &PolicyHost, bytes: &[u8], role: Option<&str>) -> anyhow::Result<Compiled> {
    if let Some(name) = role {
        let role = Role::parse(name).with_context(|| format!("unknown role {name}"))?;
        return Ok(host.compile(role, bytes)?);
    }
    let mut reasons = Vec::new();
    for role in Role::ALL {
        match host.compile(role, bytes) {
            Ok(compiled) => return Ok(compiled),
            Err(err) => reasons.push(format!("{}: {err}", role.as_str())),
        }
    }
    bail!("not a policy: {}", reasons.join("; "))
}

pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { file, role } => check(&file, role.as_deref()),
        PolicyCommand::Test { file, role, candidates, calls, fixtures, explain } => {
            test(&file, role.as_deref(), candidates, calls)?;
            if fixtures.is_empty() {
                return Ok(());
            }
            let host = host();
            let compiled = compile(&host, &read(&file)?, role.as_deref())?;
            let mut all = Vec::new();
            for f in &fixtures {
                all.extend(super::fixtures::load(f)?);
            }
            super::fixtures::run(&host, &compiled, &all, explain)
        }
        PolicyCommand::New { name, role, dir } => {
            let role = Role::parse(&role).with_context(|| format!("unknown role {role}"))?;
            let made = super::scaffold::new(&name, role, &dir)?;
            println!("wrote {} — next: cd {} && switchboard policy build", made.display(), made.display());
            Ok(())
        }
        PolicyCommand::Build { dir } => {
            let component = super::scaffold::build(&dir)?;
            println!("built {}", component.display());
            check(&component, None)
        }
        PolicyCommand::Push { file, role, shadow, canary, admin } => {
            let bytes = read(&file)?;
            let mode = match (&canary, shadow) {
                (Some(share), _) => {
                    let share: u32 =
                        share.trim_end_matches('%').parse().context("--canary takes a percent, like 5%")?;
                    format!("canary&share={share}")
                }
                (None, true) => "shadow".into(),
                (None, false) => "active".into(),
            };
            let body = admin.call("PUT", &format!("/admin/policies/{role}?mode={mode}"), &bytes).await?;
            println!("{body}");
            Ok(())
        }
        PolicyCommand::Replay { file, admin } => {
            let host = host();
            let compiled = compile(&host, &read(&file)?, None)?;
            let path = format!("/admin/policies/{}/samples", compiled.role.as_str());
            let samples = admin.call("GET", &path, b"").await?;
            let samples: Vec<super::fixtures::Fixture> =
                serde_json::from_value(samples).context("the gateway's samples")?;
            if samples.is_empty() {
                bail!("the gateway kept no decisions yet (policy.replay_every, policy.replay_samples)");
            }
            super::fixtures::replay(&host, &compiled, &samples)
        }
        PolicyCommand::Status { admin } => {
            print_status(&admin.call("GET", "/admin/policies", b"").await?);
            Ok(())
        }
        PolicyCommand::Promote { role, admin } => {
            println!("{}", admin.call("POST", &format!("/admin/policies/{role}/promote"), b"").await?);
            Ok(())
        }
        PolicyCommand::Rollback { role, admin } => {
            println!("{}", admin.call("POST", &format!("/admin/policies/{role}/rollback"), b"").await?);
            Ok(())
        }
        PolicyCommand::Canary { action: CanaryAction::Abort { role, admin } } => {
            println!("{}", admin.call("DELETE", &format!("/admin/policies/{role}/canary"), b"").await?);
            Ok(())
        }
        PolicyCommand::Shadow { action: ShadowAction::Clear { role, admin } } => {
            println!("{}", admin.call("DELETE", &format!("/admin/policies/{role}/shadow"), b"").await?);
            Ok(())
        }
        PolicyCommand::Bench { file, calls } => bench(file.as_deref(), calls).await,
    }
}

fn check(file: &Path, role: Option<&str>) -> anyhow::Result<()> {
    let bytes = read(file)?;
    let host = host();
    let (imports, exports) = host.describe(&bytes)?;
    println!("file     {}", file.display());
    println!("sha256   {}", sha256_hex(&bytes));
    println!("size     {} bytes", bytes.len());
    println!("imports  {}", if imports.is_empty() { "-".into() } else { imports.join(", ") });
    println!("exports  {}", exports.join(", "));
    let compiled = compile(&host, &bytes, role)?;
    println!("world    switchboard:policy/{}@0.1.2", compiled.role.as_str());
    let policies = Policies::new(host);
    match policies.prepare(compiled.role, &bytes, "check") {
        Ok(_) => println!("smoke    ok (sample inputs, within 5 ms and 16 MiB)"),
        Err(err) => bail!("rejected: {err}"),
    }
    Ok(())
}

fn test(file: &Path, role: Option<&str>, candidates: usize, calls: usize) -> anyhow::Result<()> {
    let bytes = read(file)?;
    let host = host();
    let compiled = compile(&host, &bytes, role)?;
    let stats = Stats::default();
    let mut peak = 0;
    // A call can miss its deadline when the machine preempts the thread (a busy machine, a CI
    // runner): counted and reported; any other failure is the policy's and stops the test.
    let mut misses = 0;
    let mut tolerate = |out: Result<(), policy::CallError>| match out {
        Err(policy::CallError::Deadline(_)) => {
            misses += 1;
            Ok(())
        }
        other => other,
    };
    match compiled.role {
        Role::NodeSelection => {
            let (task, nodes) = (samples::task(), samples::nodes(candidates));
            let (first, _) = host.select_measured(&compiled, &task, &nodes);
            println!("decision {:?}", first.map(|ids| ids.into_iter().take(8).collect::<Vec<_>>()));
            for _ in 0..calls {
                let start = Instant::now();
                let (out, memory) = host.select_measured(&compiled, &task, &nodes);
                stats.record(start.elapsed().as_micros() as u64);
                peak = peak.max(memory);
                tolerate(out.map(drop))?;
            }
        }
        Role::RoomRouting => {
            let (u, m, a) = (samples::utterance(), samples::members(), samples::availability());
            println!("decision {:?}", host.route(&compiled, &u, &m, &a));
            for _ in 0..calls {
                let start = Instant::now();
                let out = host.route(&compiled, &u, &m, &a);
                stats.record(start.elapsed().as_micros() as u64);
                tolerate(out.map(drop))?;
            }
        }
        Role::Admission => {
            let request = samples::admission_request();
            println!("decision {:?}", host.admit(&compiled, &request));
            for _ in 0..calls {
                let start = Instant::now();
                let out = host.admit(&compiled, &request);
                stats.record(start.elapsed().as_micros() as u64);
                tolerate(out.map(drop))?;
            }
        }
    }
    if misses > 0 {
        println!(
            "deadline {misses} of {calls} calls missed the 5 ms deadline (a busy machine, or a slow policy)"
        );
    }
    println!("calls    {calls} ({} candidates)", candidates);
    println!(
        "time     p50 ≤ {} µs, p99 ≤ {} µs per call (instantiate + call)",
        stats.quantile(0.5),
        stats.quantile(0.99)
    );
    if compiled.role == Role::NodeSelection {
        println!("memory   {} KiB linear memory at peak", peak / 1024);
    }
    Ok(())
}

/// Figures for docs/policies.md: decision cost and file-write-to-active time.
async fn bench(file: Option<&Path>, calls: usize) -> anyhow::Result<()> {
    let host = host();
    let mut subjects = vec![("least-loaded (embedded)".to_owned(), artifacts::LEAST_LOADED.to_vec())];
    println!("{calls} calls each; instance warm (one per thread), p50/p99 are histogram bucket upper bounds");
    if let Some(file) = file {
        subjects.push((file.display().to_string(), read(file)?));
    }
    println!(
        "{:<32} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "policy", "candidates", "p50 µs", "p99 µs", "mean µs", "errors"
    );
    for (name, bytes) in &subjects {
        let compiled = host.compile(Role::NodeSelection, bytes)?;
        for n in [16, 256] {
            let (task, nodes) = (samples::task(), samples::nodes(n));
            let stats = Stats::default();
            let mut errors = 0;
            let start = Instant::now();
            for _ in 0..calls {
                let t = Instant::now();
                // A call can miss its deadline when the machine preempts the thread; count it.
                errors += host.select(&compiled, &task, &nodes).is_err() as usize;
                stats.record(t.elapsed().as_micros() as u64);
            }
            let mean = start.elapsed().as_secs_f64() * 1e6 / calls as f64;
            let (p50, p99) = (stats.quantile(0.5), stats.quantile(0.99));
            println!("{name:<32} {n:>10} {p50:>8} {p99:>8} {mean:>8.1} {errors:>8}");
        }
    }

    let dir = tempfile::tempdir()?;
    let policies = Arc::new(Policies::new(host));
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(policy::watch::run(policies.clone(), dir.path().to_owned(), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path = dir.path().join(policy::watch::file_name(Role::RoomRouting));
    let mut samples_ms = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        std::fs::write(&path, artifacts::BY_LANGUAGE)?;
        while !policies.active(Role::RoomRouting).source.starts_with("file:") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples_ms.push(start.elapsed().as_secs_f64() * 1e3);
        std::fs::remove_file(&path)?;
        while policies.active(Role::RoomRouting).source != "embedded" {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    shutdown.cancel();
    let _ = watcher.await;
    samples_ms.sort_by(f64::total_cmp);
    println!(
        "file write → active: median {:.0} ms, max {:.0} ms over {} swaps (debounce 100 ms, includes compile + smoke test)",
        samples_ms[samples_ms.len() / 2],
        samples_ms[samples_ms.len() - 1],
        samples_ms.len()
    );
    Ok(())
}
