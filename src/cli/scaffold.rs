//! `switchboard policy new` and `policy build`: a policy crate anywhere, built with cargo alone.
//! `new` writes the crate with its own copy of the WIT (so it builds outside this repository);
//! `build` runs cargo for `wasm32-unknown-unknown` and turns the core module into a component
//! in-process with wit-component (the version wasmtime is built with), then checks it like the
//! gateway's loader does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use switchboard::policy::Role;

const TARGET: &str = "wasm32-unknown-unknown";
/// The WIT the gateway implements, copied into every new crate.
const WIT: &str = include_str!("../../wit/policy.wit");

/// Writes a new policy crate `name` for `role` into `parent/name`.
pub fn new(name: &str, role: Role, parent: &Path) -> anyhow::Result<PathBuf> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("a policy name is letters, digits, '-' and '_': {name:?}");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("wit"))?;
    let write = |file: &str, text: String| {
        std::fs::write(dir.join(file), text).with_context(|| format!("writing {file}"))
    };
    write("Cargo.toml", cargo_toml(name))?;
    write("wit/policy.wit", WIT.to_owned())?;
    write("src/lib.rs", lib_rs(role))?;
    write("README.md", readme(name, role))?;
    write("fixtures.json", fixtures(role))?;
    write(".gitignore", "target/\n*.wasm\n".to_owned())?;
    Ok(dir)
}

/// Builds the crate in `dir` and writes `<dir>/<name>.wasm`, the component; returns its path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let name = package_name(&text).with_context(|| format!("no [package] name in {}", manifest.display()))?;
    ensure_target()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let module_path =
        target_dir.join(TARGET).join("release").join(format!("{}.wasm", name.replace('-', "_")));
    let module = std::fs::read(&module_path).with_context(|| format!("reading {}", module_path.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .context("making the component (does src/lib.rs call wit_bindgen::generate! and export!?)")?;
    let out = dir.join(format!("{name}.wasm"));
    std::fs::write(&out, component)?;
    Ok(out)
}

fn package_name(cargo_toml: &str) -> Option<String> {
    let table: toml::Table = cargo_toml.parse().ok()?;
    Some(table.get("package")?.get("name")?.as_str()?.to_owned())
}

/// `rustup target add wasm32-unknown-unknown` when rustup is there; otherwise cargo says what is
/// missing.
fn ensure_target() -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup").args(["target", "list", "--installed"]).output() else {
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == TARGET) {
        return Ok(());
    }
    let status = Command::new("rustup").args(["target", "add", TARGET]).status()?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed");
    }
    Ok(())
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# Pinned: the wit-bindgen whose component encoding matches the gateway's wasmtime.
wit-bindgen = {{ version = "=0.60.0", default-features = false, features = ["macros", "realloc", "bitflags"] }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# Its own workspace: built wherever it is.
[workspace]
"#
    )
}

fn lib_rs(role: Role) -> String {
    match role {
        Role::NodeSelection => r#"//! A node-selection policy: ranks the candidates of one task, best first.
//! The interface is wit/policy.wit; `switchboard policy build` makes the component.

wit_bindgen::generate!({ path: "wit", world: "node-selection" });

struct Policy;

impl Guest for Policy {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let _ = &task;
        // Least loaded first; on a tie, the freshest heartbeat.
        let mut ranked: Vec<(f64, u64, String)> = candidates
            .into_iter()
            .map(|n| (n.running as f64 / n.capacity.max(1) as f64, n.heartbeat_age_ms, n.id))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        Ok(ranked.into_iter().map(|r| r.2).collect())
    }
}

export!(Policy);
"#
        .to_owned(),
        // The embedded default, as a starting point (its WIT is the crate's own copy here).
        Role::RoomRouting => include_str!("../../policies/by-language/src/lib.rs")
            .replace(r#"path: "../../wit""#, r#"path: "wit""#),
        // The example of docs/overload.md, as a starting point.
        Role::Admission => include_str!("../../policies/interactive-first/src/lib.rs")
            .replace(r#"path: "../../wit""#, r#"path: "wit""#),
    }
}

fn readme(name: &str, role: Role) -> String {
    let role = role.as_str();
    format!(
        "# {name}\n\nA Switchboard {role} policy. `wit/policy.wit` is the interface (a copy of the gateway's; \
         keep it as it is).\n\n```sh\nswitchboard policy build .            # cargo + the component: {name}.wasm\n\
         switchboard policy test {name}.wasm --fixtures fixtures.json   # your cases (--explain: the inputs)\n\
         switchboard policy push {name}.wasm --role {role} --shadow   # beside the active one, not enforced\n\
         switchboard policy status\nswitchboard policy promote --role {role}\n```\n\nSee docs/policies.md in the \
         Switchboard repository for the interface, the limits and the rollout.\n"
    )
}

/// Cases the example passes; edit them with the policy (docs/policies.md, "Test").
fn fixtures(role: Role) -> String {
    match role {
        Role::NodeSelection => r#"[
  {
    "name": "the least loaded first",
    "task": { "src_lang": "zh", "tgt_lang": "en" },
    "candidates": [
      { "id": "busy", "running": 3, "capacity": 4 },
      { "id": "idle", "running": 0, "capacity": 4, "labels": { "region": "eu" } },
      { "id": "half", "running": 2, "capacity": 4, "heartbeat_age_ms": 4500 }
    ],
    "expect_first": ["idle", "half", "busy"]
  },
  {
    "name": "on equal load, the freshest heartbeat",
    "candidates": [
      { "id": "stale", "heartbeat_age_ms": 9000 },
      { "id": "fresh", "heartbeat_age_ms": 100 }
    ],
    "expect_first": ["fresh"]
  }
]
"#
        .to_owned(),
        Role::RoomRouting => r#"[
  {
    "name": "one route per language the others asked for",
    "utterance": { "session_id": "s-1", "src_lang": "en" },
    "members": [
      { "session_id": "s-1", "preferred_lang": "en" },
      { "session_id": "s-2", "preferred_lang": "zh" },
      { "session_id": "s-3", "preferred_lang": "zh" },
      { "session_id": "s-4", "preferred_lang": "ja" }
    ],
    "availability": { "zh": 4, "ja": 1 },
    "expect_routes": { "zh": ["s-2", "s-3"], "ja": ["s-4"] }
  }
]
"#
        .to_owned(),
        Role::Admission => r#"[
  {
    "name": "a room utterance goes first",
    "admission": { "room_code": "123456", "mode": "two_way_auto", "tenant_id": "acme" },
    "expect_admission": { "admit": { "band": 0, "weight": 1.0 } }
  },
  {
    "name": "one-way captioning waits behind the rest",
    "admission": { "mode": "one_way", "tenant_id": "acme" },
    "expect_admission": { "admit": { "band": 2, "weight": 1.0 } }
  },
  {
    "name": "a trial tenant runs at most 2 tasks, at half weight",
    "admission": { "mode": "two_way_auto", "tenant_id": "trial-kiosk" },
    "expect_admission": { "admit": { "band": 1, "weight": 0.5, "max_running": 2 } }
  },
  {
    "name": "a trial tenant with 20 tasks waiting is turned away",
    "admission": { "tenant_id": "trial-kiosk", "tenant_waiting": 20 },
    "expect_admission": { "reject": "" }
  }
]
"#
        .to_owned(),
    }
}
