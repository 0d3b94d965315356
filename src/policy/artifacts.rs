//! The policy components `build.rs` built from `policies/`.

include!(concat!(env!("OUT_DIR"), "/policies.rs"));

/// The component `policies/<name>` was built into.
pub fn path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(DIR).join(format!("{name}.wasm"))
}
