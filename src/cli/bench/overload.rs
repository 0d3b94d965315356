//! The overload rows (docs/overload.md): two tenants share a small fleet — one bursting to 3× its
//! capacity, the other steady at 20 % — with the fair queue on and off, and the steady tenant
//! alone for its unloaded latency. Per tenant: its share of the results, and p50/p99 result latency.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;
use switchboard::histogram::Histogram;
use switchboard::sim::client::{Load, Session};
use switchboard::sim::node::{self, NodeSpec};
use tokio_util::sync::CancellationToken;

use super::procs::GatewayProc;

/// The fleet: NODES × SLOTS slots, each answering after DELAY — CAPACITY results a second.
const NODES: usize = 10;
const SLOTS: u32 = 2;
const DELAY: Duration = Duration::from_millis(50);
const CAPACITY: f64 = NODES as f64 * SLOTS as f64 / 0.05;
/// Sessions per tenant: the burst's rate is spread over many speakers, the steady one's over a few.
const BURST_SESSIONS: usize = 60;
const STEADY_SESSIONS: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub(super) struct TenantRow {
    pub(super) case: String,
    pub(super) tenant: String,
    pub(super) offered_per_s: f64,
    pub(super) results_per_s: f64,
    /// The tenant's part of all results in the case.
    pub(super) share: f64,
    pub(super) errors: u64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
}

/// The three cases: the steady tenant alone, then both with the fair queue on, then off.
pub(super) async fn run(redis_url: &str, seconds: u64, audio: Arc<str>) -> anyhow::Result<Vec<TenantRow>> {
    let mut rows = Vec::new();
    for (case, fair, burst) in [
        ("steady alone", true, false),
        ("burst, fair queue on", true, true),
        ("burst, fair queue off", false, true),
    ] {
        rows.extend(one_case(redis_url, case, fair, burst, seconds, audio.clone()).await?);
    }
    Ok(rows)
}

async fn one_case(
    redis_url: &str,
    case: &str,
    fair: bool,
    burst: bool,
    seconds: u64,
    audio: Arc<str>,
) -> anyhow::Result<Vec<TenantRow>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("overload.toml");
    // Keys of their own per case, so what one case left waiting does not count in the next.
    let prefix = format!("ov{}", switchboard::store::new_id("", 6).to_lowercase());
    std::fs::write(
        &config,
        format!("[scheduler]\nprefix = \"{prefix}\"\nfair_queue = {fair}\ndispatch_wait_ms = 10000\n"),
    )?;
    let gateway = GatewayProc::start_with(redis_url, 1, Some(&config)).await?;
    let stop = CancellationToken::new();
    let spec =
        NodeSpec { answer_delay: DELAY, answer_delay_max: DELAY, ..NodeSpec::new(&["zh"], &["en"], SLOTS) };
    let answered = Arc::new(AtomicU64::new(0));
    for _ in 0..NODES {
        let (_, serve) =
            node::start(&format!("{}/ws/node", gateway.ws), spec.clone(), answered.clone(), stop.clone())
                .await?;
        tokio::spawn(serve);
    }
    let tenants: Vec<(&str, usize, f64)> = if burst {
        vec![("burst", BURST_SESSIONS, 3.0 * CAPACITY), ("steady", STEADY_SESSIONS, 0.2 * CAPACITY)]
    } else {
        vec![("steady", STEADY_SESSIONS, 0.2 * CAPACITY)]
    };
    let mut runs = Vec::new();
    for (tenant, sessions, rate) in &tenants {
        let latency = Arc::new(Histogram::default());
        let interval = Duration::from_secs_f64(*sessions as f64 / rate);
        let mut joins = Vec::new();
        for _ in 0..*sessions {
            let session = Session::open_as(
                &format!("{}/ws/session", gateway.ws),
                "zh",
                "en",
                Some(tenant),
                audio.clone(),
            )
            .await?;
            let (latency, stop) = (latency.clone(), stop.clone());
            joins.push(tokio::spawn(async move {
                session.run(Load::Open { interval }, latency, stop, Duration::from_secs(2)).await
            }));
        }
        runs.push((*tenant, *rate, latency, joins));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.cancel();
    let mut rows = Vec::new();
    for (tenant, rate, latency, joins) in runs {
        let (mut results, mut errors) = (0, 0);
        for join in joins {
            let tally = join.await?;
            results += tally.results;
            errors += tally.errors;
        }
        rows.push(TenantRow {
            case: case.to_owned(),
            tenant: tenant.to_owned(),
            offered_per_s: rate,
            results_per_s: results as f64 / seconds as f64,
            share: 0.0,
            errors,
            p50_ms: latency.quantile(0.5) as f64 / 1000.0,
            p99_ms: latency.quantile(0.99) as f64 / 1000.0,
        });
    }
    let total: f64 = rows.iter().map(|r| r.results_per_s).sum();
    for row in &mut rows {
        row.share = if total > 0.0 { row.results_per_s / total } else { 0.0 };
    }
    drop(gateway);
    Ok(rows)
}

/// The rows as a Markdown table, and the target: the steady tenant's p99 under the burst with the
/// fair queue within 2× of its p99 alone.
pub(super) fn markdown(rows: &[TenantRow]) -> String {
    let mut out = format!(
        "## Overload: two tenants\n\n{NODES} nodes × {SLOTS} slots answering after {} ms ({CAPACITY:.0} results/s). \
         Tenant `burst` offers 3× that over {BURST_SESSIONS} sessions, `steady` 20 % over {STEADY_SESSIONS} \
         (open loop); a task waits at most 10 s for a slot. Latency: utterance sent → translation_result \
         at the client (histogram bucket upper bounds). docs/overload.md.\n\n\
         | case | tenant | offered /s | results /s | share of results | errors | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|---|\n",
        DELAY.as_millis()
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} % | {} | {:.1} | {:.1} |\n",
            r.case,
            r.tenant,
            r.offered_per_s,
            r.results_per_s,
            r.share * 100.0,
            r.errors,
            r.p50_ms,
            r.p99_ms
        );
    }
    let p99 = |case: &str| rows.iter().find(|r| r.case == case && r.tenant == "steady").map(|r| r.p99_ms);
    if let (Some(alone), Some(fair)) = (p99("steady alone"), p99("burst, fair queue on")) {
        let verdict = if fair <= 2.0 * alone { "met" } else { "missed" };
        out += &format!(
            "\nTarget: the steady tenant's p99 under the burst with the fair queue within 2× of its p99 alone: \
             {fair:.1} ms against {alone:.1} ms — {verdict}.\n"
        );
    }
    out
}
