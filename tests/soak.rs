//! The short soak: `switchboard bench --soak` for 90 s (steady load, sessions and a node coming and
//! going). It exits non-zero when the gateway's RSS, descriptors or tokio tasks, or Redis's memory
//! or keys, still grow in the last third of the run, or when results stop; its table is printed
//! (docs/reliability.md has a longer run).

use std::process::Command;

#[test]
fn a_short_soak_plateaus() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["bench", "--soak", "1.5", "--soak-rate", "200"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("switchboard bench --soak runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the soak did not hold steady:\n{stdout}");
    assert_eq!(stdout.matches("plateau ").count(), 5, "every figure was judged:\n{stdout}");
}
