//! The default admission policy: every task as the gateway's configuration says
//! (`[scheduler] tenant_weights`, `tenant_bands`, `tenant_max_running`). While it is the active
//! version and nothing runs beside it, the gateway does not call it at all.

wit_bindgen::generate!({ path: "../../wit", world: "admission" });

struct Configured;

impl Guest for Configured {
    fn admit(_request: AdmissionRequest) -> Result<AdmissionDecision, String> {
        Ok(AdmissionDecision::Configured)
    }
}

export!(Configured);
