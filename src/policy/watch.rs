//! Hot swap from a directory: `node-selection.wasm`, `room-routing.wasm` and `admission.wasm` in
//! `policy.dir`.
//! Changes are debounced and content-hashed; a new version is compiled and smoke-tested off the
//! runtime, then swapped in, or rejected with its reason while the old one stays. Deleting a file
//! brings back the embedded default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Policies, Role, sha256_hex};

const DEBOUNCE: Duration = Duration::from_millis(100);

pub fn file_name(role: Role) -> String {
    format!("{}.wasm", role.as_str())
}

/// Watches `dir` until `shutdown`. Loads what is there first.
pub async fn run(policies: Arc<Policies>, dir: PathBuf, shutdown: CancellationToken) {
    if let Err(err) = std::fs::create_dir_all(&dir) {
        warn!(dir = %dir.display(), %err, "Cannot create the policy directory; not watching it.");
        return;
    }
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |_event| {
        // A full channel already holds a wake-up; the scan reads the directory as it is then.
        let _ = tx.try_send(());
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(err) => return warn!(%err, "Cannot watch the policy directory."),
    };
    if let Err(err) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        return warn!(dir = %dir.display(), %err, "Cannot watch the policy directory.");
    }
    let mut seen: HashMap<Role, String> = HashMap::new();
    scan(&policies, &dir, &mut seen).await;
    loop {
        tokio::select! {
            woke = rx.recv() => if woke.is_none() { return },
            _ = shutdown.cancelled() => return,
        }
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        scan(&policies, &dir, &mut seen).await;
    }
}

/// Loads each role's file whose content changed since the last scan.
async fn scan(policies: &Arc<Policies>, dir: &Path, seen: &mut HashMap<Role, String>) {
    for role in Role::ALL {
        let path = dir.join(file_name(role));
        let source = format!("file:{}", path.display());
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let sha = sha256_hex(&bytes);
                if seen.get(&role) == Some(&sha) {
                    continue;
                }
                seen.insert(role, sha);
                let p = policies.clone();
                let loaded = tokio::task::spawn_blocking(move || p.load(role, &bytes, &source)).await;
                if let Err(err) = loaded {
                    warn!(%err, "Policy load task failed.");
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if seen.remove(&role).is_some() && policies.active(role).source == source {
                    policies.reset(role);
                }
            }
            Err(err) => warn!(path = %path.display(), %err, "Cannot read the policy file."),
        }
    }
}
