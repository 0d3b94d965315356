//! The operator surface: the admin API and its OpenAPI document, `/metrics`, the log level, and the
//! dashboard in a real headless Chromium (loaded, live data seen changing, a node drained by a
//! click, a screenshot saved as `target/dashboard.png`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Every route of the admin API, as the router declares it.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("get", "/admin/policies"),
    ("put", "/admin/policies/{role}"),
    ("post", "/admin/policies/{role}/rollback"),
    ("delete", "/admin/policies/{role}/shadow"),
    ("post", "/admin/policies/{role}/promote"),
    ("get", "/admin/policies/{role}/samples"),
    ("delete", "/admin/policies/{role}/canary"),
    ("get", "/admin/nodes"),
    ("post", "/admin/nodes/{id}/drain"),
    ("get", "/admin/tasks/{id}"),
    ("get", "/admin/jobs/{id}"),
    ("get", "/admin/rooms"),
    ("get", "/admin/rooms/{code}"),
    ("get", "/admin/gateways"),
    ("get", "/admin/queues"),
    ("put", "/admin/log-level"),
    ("get", "/admin/overview"),
    ("get", "/admin/stream"),
];

#[tokio::test]
async fn the_openapi_document_describes_every_admin_route() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    let (status, doc) = admin(&gw, "GET", "/admin/openapi.json", None, b"").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ADMIN_ROUTES {
        assert!(
            paths.get(*path).is_some_and(|p| p.get(*method).is_some()),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, ADMIN_ROUTES.len(), "the document names routes the router does not have");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    gw.stop().await;
}

#[tokio::test]
async fn the_admin_api_shows_nodes_tasks_jobs_rooms_and_gateways_and_drains_a_node() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.admin_token = Some("t".into())).await;
    let mut node = gw.node().await;
    let node_id = node.register(&["zh"], &["en"], 4).await["node_id"].as_str().unwrap().to_owned();
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.send(json!({"type":"room_create","client_ts":1,"preferred_lang":"en"})).await;
    let code = client.expect("room_create_ack").await["room_code"].as_str().unwrap().to_owned();
    client.expect("room_members").await;
    client.utter(&session, 0).await;
    let job = node.expect("job_assign").await;
    node.answer(&job, "hello").await;
    client.expect("translation_result").await;

    let get = |path: String| {
        let gw = &gw;
        async move { admin(gw, "GET", &path, Some("t"), b"").await }
    };
    let (status, nodes) = get("/admin/nodes".into()).await;
    assert_eq!(status, 200);
    let n = &nodes["nodes"][0];
    assert_eq!(
        (n["id"].as_str(), n["capacity"].as_i64(), n["running"].as_i64()),
        (Some(node_id.as_str()), Some(4), Some(0))
    );
    assert_eq!(n["gateway"], &*gw.state.gateway_id);
    assert!(n["cell"].as_str().unwrap().starts_with("c0-") && n["pairs"].as_str().unwrap().contains("zh>en"));
    assert!(n.get("secret").is_none() && n.get("conn").is_none(), "no secrets in the listing");

    let (status, task) = get(format!("/admin/tasks/{session}:0:en")).await;
    assert_eq!(status, 200, "{task}");
    assert_eq!((task["state"].as_str(), task["attempt"].as_i64()), (Some("completed"), Some(1)));
    assert!(task.get("spec").is_none(), "an ended task keeps no spec: {task}");
    let (status, job_record) = get(format!("/admin/jobs/{}", job["job_id"].as_str().unwrap())).await;
    assert_eq!((status, job_record["node"].as_str()), (200, Some(node_id.as_str())));
    assert!(job_record["took_ms"].as_i64().unwrap() >= 0, "{job_record}");
    assert_eq!(get("/admin/tasks/s-none:0:en".into()).await.0, 404);

    let (_, rooms) = get("/admin/rooms".into()).await;
    assert_eq!(rooms["rooms"], json!([code]));
    let (_, room) = get(format!("/admin/rooms/{code}")).await;
    assert_eq!(room["members"][0]["session_id"], session.as_str());
    let (_, gateways) = get("/admin/gateways".into()).await;
    assert_eq!(gateways["live"][0]["gateway_id"], &*gw.state.gateway_id);
    let (_, overview) = get("/admin/overview".into()).await;
    assert_eq!(overview["counters"]["tasks_completed"], 1);
    assert_eq!(overview["rooms"][0]["room_code"], code.as_str());

    // Draining needs the token; then the node takes no new work.
    assert_eq!(admin(&gw, "POST", &format!("/admin/nodes/{node_id}/drain"), None, b"").await.0, 401);
    let (status, _) = admin(&gw, "POST", &format!("/admin/nodes/{node_id}/drain"), Some("t"), b"").await;
    assert_eq!(status, 200);
    assert_eq!(admin(&gw, "POST", "/admin/nodes/node-nope/drain", Some("t"), b"").await.0, 404);
    let (_, nodes) = get("/admin/nodes".into()).await;
    assert_eq!(nodes["nodes"][0]["draining"], 1);
    assert!(gw.state.store.candidates(gw.state.store.cell(0), "zh>en", &[], None).await.unwrap().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn metrics_name_every_family_with_bounded_labels() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.scheduler.dispatch_wait_ms = 100).await;
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    client.utter(&session, 0).await;
    assert_eq!(client.expect("error").await["code"], "NO_AVAILABLE_NODE");
    let (status, text) = admin(&gw, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    for family in [
        "switchboard_tasks_failed_by_reason_total{reason=\"NO_AVAILABLE_NODE\"} 1",
        "switchboard_script_seconds_count{script=\"dispatch_task\"}",
        "switchboard_nodes{cell=\"c0-",
        "switchboard_rooms 0",
        "switchboard_inbox_lag_seconds_count",
        "switchboard_dispatch_seconds_bucket",
        "switchboard_result_seconds_count",
        "switchboard_policy_calls_total{role=\"node-selection\"",
        "switchboard_connected_sessions 1",
        "switchboard_frames_forwarded_total",
        "switchboard_messages_rate_limited_total",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}");
    }
    assert!(!text.contains(&session), "no session ids as labels");
    gw.stop().await;
}

/// `/metrics` parses with a Prometheus text-format parser, names every series once (a histogram's
/// `le` edges strictly increasing: its first buckets split the first microsecond and used to repeat
/// `le="0.000001"`), and every policy family in it is documented in docs/policies.md and
/// docs/operations.md.
#[tokio::test]
async fn metrics_parse_without_duplicate_series_and_policy_families_are_documented() {
    let redis = redis();
    let gw = TestGateway::start(&redis, |_| {}).await;
    let (node, mut client, session) = gw.node_and_client(4).await;
    let _node = auto_answer(node, "n");
    for i in 0..10 {
        client.utter(&session, i).await;
        client.expect("translation_result").await;
    }
    let (status, text) = admin(&gw, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("/metrics parses");
    assert!(scrape.samples.len() > 20, "{} samples", scrape.samples.len());
    let mut series = std::collections::BTreeSet::new();
    for sample in &scrape.samples {
        let labels: std::collections::BTreeMap<&String, &String> = sample.labels.iter().collect();
        assert!(series.insert(format!("{}{labels:?}", sample.metric)), "{} {labels:?} twice", sample.metric);
        if let prometheus_parse::Value::Histogram(buckets) = &sample.value {
            let edges: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
            assert!(edges.windows(2).all(|w| w[0] < w[1]), "{}: le edges {edges:?}", sample.metric);
        }
    }
    let policies_doc = std::fs::read_to_string("docs/policies.md").unwrap();
    let operations_doc = std::fs::read_to_string("docs/operations.md").unwrap();
    let families: std::collections::BTreeSet<&str> = scrape
        .samples
        .iter()
        .map(|s| s.metric.as_str())
        .filter(|m| m.starts_with("switchboard_policy_"))
        .map(|m| m.trim_end_matches("_count").trim_end_matches("_sum").trim_end_matches("_bucket"))
        .collect();
    assert!(families.len() >= 5, "{families:?}");
    for family in families {
        assert!(policies_doc.contains(family), "docs/policies.md does not name {family}");
        assert!(operations_doc.contains(family), "docs/operations.md does not name {family}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_log_level_changes_at_run_time() {
    let redis = redis();
    let gw = ChildGateway::launch(&redis, "gw-log", "admin_token = \"t\"", "", false).await;
    let url = format!("{}/admin/log-level", gw.admin_url);
    let put = |body: &'static str| {
        let url = url.clone();
        async move { switchboard::admin_client::request("PUT", &url, Some("t"), body.as_bytes()).await.unwrap() }
    };
    assert_eq!(put("info,switchboard=[").await.0, 400);
    assert_eq!(put("debug").await.0, 200);
    // At debug level the gateway logs what it did not log before.
    let mut client = gw.client().await;
    client.send(json!({"type":"session_init","tgt_lang":"en"})).await;
    let session = client.expect("session_init_ack").await["session_id"].clone();
    // A repeated chunk is logged at debug level only.
    for _ in 0..2 {
        client.send(json!({"type":"audio_chunk","session_id":session,"seq":1,"payload":"AAAA"})).await;
    }
    eventually("debug lines in the log", || async { gw.log().contains("Repeated audio chunk ignored") })
        .await;
}

/// A minimal Chrome DevTools Protocol client over one page target.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        use futures_util::{SinkExt, StreamExt};
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tokio_tungstenite::tungstenite::Message::Text(message.into())).await.unwrap();
        loop {
            let frame =
                tokio::time::timeout(WAIT, self.ws.next()).await.expect("devtools answers").unwrap().unwrap();
            let Ok(text) = frame.to_text() else { continue };
            let reply: Value = serde_json::from_str(text).unwrap();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        // Generous: the page polls a debug-build gateway on a machine running other tests.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.eval(expression).await;
            if value.as_bool() != Some(false) && !value.is_null() {
                return value;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn the_dashboard_shows_live_data_and_drains_a_node_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI must have Chromium (.ci/run installs it)");
        eprintln!("skipped: no Chromium on this machine (apt-get install chromium)");
        return;
    };
    let redis = redis();
    let gw = TestGateway::start(&redis, |c| c.admin_token = Some("dash-token".into())).await;
    let mut a = gw.node().await;
    a.send(node_register(Some("node-eu-1"), &["zh", "en"], &["en", "ja"], 4)).await;
    a.expect("node_register_ack").await;
    let mut b = gw.node().await;
    b.send(node_register(Some("node-us-1"), &["zh"], &["en"], 4)).await;
    b.expect("node_register_ack").await;
    let (_a, _b) = (auto_answer(a, "eu"), auto_answer(b, "us"));
    // A client that keeps talking, so the page has live numbers to show.
    let mut client = gw.client().await;
    let session = client.init_one_way("zh", "en").await;
    let talking = tokio::spawn(async move {
        for i in 0.. {
            client.utter(&session, i).await;
            while client.try_recv(Duration::from_millis(150)).await.is_some() {}
        }
    });

    let profile = tempfile::tempdir().unwrap();
    let mut chrome = std::process::Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .args(["--remote-debugging-port=0", "--window-size=1400,1000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium starts");
    let port_file = profile.path().join("DevToolsActivePort");
    eventually("chromium's devtools port", || async {
        std::fs::read_to_string(&port_file).is_ok_and(|s| s.lines().count() >= 2)
    })
    .await;
    let active = std::fs::read_to_string(&port_file).unwrap();
    let (port, browser_path) = (active.lines().next().unwrap(), active.lines().nth(1).unwrap());
    // A new page through the browser endpoint, then the page's own endpoint.
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{browser_path}")).await.unwrap();
    let mut browser_session = Page { ws, next_id: 0 };
    let target = browser_session.call("Target.createTarget", json!({"url": "about:blank"})).await;
    let page_ws = format!("ws://127.0.0.1:{port}/devtools/page/{}", target["targetId"].as_str().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(page_ws.as_str()).await.unwrap();
    let mut page = Page { ws, next_id: 0 };
    page.call("Page.enable", json!({})).await;
    // The token is what an operator types once; the page keeps it in local storage.
    page.call("Page.navigate", json!({"url": format!("{}/dashboard", gw.admin_url)})).await;
    page.wait_for("the page", "document.readyState === 'complete'").await;
    page.eval("localStorage.setItem('switchboard.token', 'dash-token'); location.reload(); true").await;
    page.wait_for(
        "the reloaded page",
        "document.readyState === 'complete' && !!document.getElementById('nodes')",
    )
    .await;

    // Live data: both nodes listed, updates arriving, completed work counted.
    page.wait_for("two nodes", "document.querySelectorAll('#nodes tbody tr[data-node]').length === 2").await;
    let first = page.wait_for("updates", "Number(document.getElementById('updates').textContent) >= 2 && document.getElementById('updates').textContent").await;
    page.wait_for(
        "a changing update count",
        &format!("Number(document.getElementById('updates').textContent) > {}", first.as_str().unwrap()),
    )
    .await;
    page.wait_for("throughput", "Number(document.getElementById('k-rate').textContent) > 0").await;
    page.wait_for("the chart", "document.querySelectorAll('#chart polyline').length === 2").await;
    let gateway = page.eval("document.getElementById('gateway').textContent").await;
    assert_eq!(gateway, &*gw.state.gateway_id);

    // An operator drains node-us-1 from the page.
    page.eval("document.querySelector('button.drain[data-node=\"node-us-1\"]').click(); true").await;
    eventually("node-us-1 to be draining", || async {
        let (_, nodes) = admin(&gw, "GET", "/admin/nodes", Some("dash-token"), b"").await;
        nodes["nodes"].as_array().unwrap().iter().any(|n| n["id"] == "node-us-1" && n["draining"] == 1)
    })
    .await;
    page.wait_for(
        "the draining state on the page",
        "document.querySelector('tr[data-node=\"node-us-1\"] .pill').textContent === 'draining'",
    )
    .await;
    page.wait_for("message clear", "document.getElementById('message').textContent === ''").await;

    // A canary and its lifecycle events show up; the operator ends it from the page.
    let canary = component("weighted-random");
    let put = "/admin/policies/node-selection?mode=canary&share=20";
    assert_eq!(admin(&gw, "PUT", put, Some("dash-token"), &canary).await.0, 200);
    page.wait_for(
        "the canary on the page",
        "document.getElementById('policies').textContent.includes('canary (20 %)')",
    )
    .await;
    page.wait_for(
        "its event",
        "/ canary [0-9a-f]{12} by admin/.test(document.getElementById('policies').textContent)",
    )
    .await;
    page.eval("document.getElementById('role').value = 'node-selection'; document.getElementById('end-canary').click(); true")
        .await;
    page.wait_for(
        "the canary ended",
        "document.getElementById('policies').textContent.includes('canary_off')",
    )
    .await;

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"})).await;
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG"), "a real screenshot");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("dashboard.png"), &png).unwrap();

    let _ = chrome.kill();
    let _ = chrome.wait();
    talking.abort();
    gw.stop().await;
}

/// `switchboard dev --demo` from a clean state: its own Redis, six nodes in two regions, a room of
/// three languages that keeps talking, a dashboard address with its token.
#[tokio::test]
async fn the_demo_command_runs_a_talking_fleet() {
    use std::io::BufRead;
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (listen, admin) = (port(), port());
    /// Stops the demo with SIGTERM whatever happens, so its private redis-server stops too.
    struct Demo(std::process::Child);
    impl Drop for Demo {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
            let stopped = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(100));
                self.0.try_wait().is_ok_and(|s| s.is_some())
            });
            if !stopped {
                let _ = self.0.kill();
            }
        }
    }
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "dev",
            "--demo",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .env("RUST_LOG", "warn")
        .env_remove("SWITCHBOARD_REDIS_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("switchboard dev --demo starts");
    // Read all of its output for as long as it runs: a closed pipe would fail its next print.
    let stdout = std::io::BufReader::new(demo.stdout.take().unwrap());
    let mut demo = Demo(demo);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(address) = line.trim().strip_prefix("dashboard: ") {
                let _ = tx.send(address.to_owned());
            }
        }
    });
    let dashboard = rx.recv_timeout(Duration::from_secs(60)).expect("the demo prints the dashboard address");
    assert!(dashboard.starts_with(&format!("http://127.0.0.1:{admin}/dashboard#token=")), "{dashboard}");
    let token = dashboard.split("#token=").nth(1).unwrap().to_owned();
    let overview = format!("http://127.0.0.1:{admin}/admin/overview");
    let read = || async {
        match switchboard::admin_client::request("GET", &overview, Some(&token), b"").await {
            Ok((_, body)) => serde_json::from_str::<Value>(&body).unwrap_or_default(),
            Err(_) => Value::Null, // not serving yet
        }
    };
    // The demo starts six nodes, six sessions and a room, then talks every 2.5 s per speaker; a
    // busy CI machine (other tests, Chromium) may need a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let o = read().await;
        let regions: std::collections::BTreeSet<_> =
            o["nodes"].as_array().into_iter().flatten().map(|n| n["labels"]["region"].to_string()).collect();
        let at_work = o["nodes"].as_array().is_some_and(|n| n.len() == 6)
            && regions.len() == 2
            && o["rooms"][0]["members"] == 3
            && o["counters"]["tasks_completed"].as_u64().is_some_and(|n| n >= 5);
        if at_work {
            break;
        }
        let summary = format!(
            "nodes {:?}, regions {regions:?}, rooms {}, completed {}",
            o["nodes"].as_array().map(Vec::len),
            o["rooms"],
            o["counters"]["tasks_completed"]
        );
        assert!(tokio::time::Instant::now() < deadline, "the demo fleet is not at work: {summary}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, page) = switchboard::admin_client::request("GET", &dashboard, None, b"").await.unwrap();
    assert!(status == 200 && page.contains("<title>Switchboard</title>"));
    // SIGTERM: the dev gateway shuts down and stops its private redis-server.
    let _ = std::process::Command::new("kill").arg("-TERM").arg(demo.0.id().to_string()).status();
    let stopped = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        demo.0.try_wait().is_ok_and(|s| s.is_some())
    });
    assert!(stopped, "the demo stops on SIGTERM");
}
