//! Builds the policy components of `policies/` (wasmtime's test-programs artifacts pattern): compiles
//! the guest crates for wasm32-unknown-unknown with the same cargo, turns each core module into a
//! component with wit-component, and writes `policies.rs` into OUT_DIR with the embedded defaults
//! and the path of every component (tests and tools load the examples and hostile ones from there).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
/// Built into the binary: the policies used when no custom one is loaded.
const EMBEDDED: &[&str] = &["least-loaded", "by-language", "configured"];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let policies = root.join("policies");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let members = members(&policies);
    println!("cargo:rerun-if-changed=wit");
    for file in ["policies/Cargo.toml", "policies/Cargo.lock"] {
        println!("cargo:rerun-if-changed={file}");
    }
    for m in &members {
        println!("cargo:rerun-if-changed=policies/{m}/Cargo.toml");
        println!("cargo:rerun-if-changed=policies/{m}/src");
    }

    ensure_target();
    let target_dir = out.join("policies-target");
    let status = Command::new(env::var("CARGO").unwrap())
        .args(["build", "--release", "--locked", "--target", TARGET, "--manifest-path"])
        .arg(policies.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's flags are for the host; the guests get none of them.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        // Under `cargo clippy` the guests are built, not linted: their bindings are generated code.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the policy crates in policies/ failed");

    let components = out.join("policies");
    fs::create_dir_all(&components).unwrap();
    let mut generated = format!(
        "/// Where the build wrote every policy component.\npub const DIR: &str = {:?};\n",
        components
    );
    for m in &members {
        let module_path =
            target_dir.join(TARGET).join("release").join(format!("{}.wasm", m.replace('-', "_")));
        let module = fs::read(&module_path).unwrap_or_else(|e| panic!("{}: {e}", module_path.display()));
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|encoder| encoder.validate(true).encode())
            .unwrap_or_else(|e| panic!("componentizing {m}: {e:#}"));
        let path = components.join(format!("{m}.wasm"));
        fs::write(&path, component).unwrap();
        if EMBEDDED.contains(&m.as_str()) {
            let name = m.to_uppercase().replace('-', "_");
            generated += &format!("pub const {name}: &[u8] = include_bytes!({:?});\n", path);
        }
    }
    fs::write(out.join("policies.rs"), generated).unwrap();
}

/// The guest crates: every folder of `policies/` with a Cargo.toml.
fn members(policies: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(policies)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The wasm32 target must be installed; install it with rustup when it is not, or say how.
fn ensure_target() {
    let installed = || {
        let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().expect("rustc runs");
        let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
        Path::new(&sysroot).join("lib/rustlib").join(TARGET).join("lib").exists()
    };
    if installed() {
        return;
    }
    let added = Command::new("rustup").args(["target", "add", TARGET]).status().is_ok_and(|s| s.success());
    if !added || !installed() {
        panic!("the {TARGET} target is missing: run `rustup target add {TARGET}`");
    }
}
