//! Host bindings of the WIT worlds in `wit/policy.wit`.

pub mod node_selection {
    // PartialEq: a shadow's answer is compared with the deciding version's.
    wasmtime::component::bindgen!({ path: "wit", world: "node-selection", additional_derives: [PartialEq] });
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

pub mod admission {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "admission",
        with: {
            "switchboard:policy/types": super::node_selection::switchboard::policy::types,
            "switchboard:policy/host": super::node_selection::switchboard::policy::host,
        },
    });
}

pub use node_selection::switchboard::policy::host::Level;
pub use node_selection::switchboard::policy::types::{
    AdmissionDecision, AdmissionRequest, Availability, LanguagePair, Member, Mode, Node, Route, ServiceTypes,
    Task, Terms, Utterance,
};
