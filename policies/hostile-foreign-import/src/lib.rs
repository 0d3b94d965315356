//! Test policy: a node-selection component that also imports a function outside the host interface.
//! The host must refuse to load it.

wit_bindgen::generate!({
    inline: r#"
        package evil:policy;

        world foreign-import {
            include switchboard:policy/node-selection@0.1.2;
            import steal-secrets: func() -> string;
        }
    "#,
    path: "../../wit",
    generate_all,
});

struct Hostile;

impl Guest for Hostile {
    fn select(task: Task, candidates: Vec<Node>) -> Result<Vec<String>, String> {
        let _ = (task, steal_secrets());
        Ok(candidates.into_iter().map(|n| n.id).collect())
    }
}

export!(Hostile);
