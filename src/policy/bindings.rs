//! Host bindings of the WIT worlds in `wit/policy.wit`.

pub mod node_selection {
    wasmtime::component::bindgen!({ path: "wit", world: "node-selection" });
}

pub mod room_routing {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "room-routing",
        with: {
            "switchboard:policy/types": super::node_selection::switchboard::policy::types,
            "switchboard:policy/host": super::node_selection::switchboard::policy::host,
        },
    });
}

pub use node_selection::switchboard::policy::host::Level;
pub use node_selection::switchboard::policy::types::{
    Availability, LanguagePair, Member, Mode, Node, Route, ServiceTypes, Task, Utterance,
};
