//! Test policy: answers the host must refuse, chosen by the task's tenant id — `loop` (never
//! returns), `trap`, `memory` (grows memory past the cap), `band` (band 12), `nan` (weight NaN),
//! `zero-weight`, `zero-cap`, `empty-reject`, `error` (returns an error). Any other tenant: admitted
//! in band 0 (so it passes the smoke test and can be loaded).

wit_bindgen::generate!({ path: "../../wit", world: "admission" });

struct Hostile;

fn admit(band: u8, weight: f64, max_running: Option<u32>) -> Result<AdmissionDecision, String> {
    Ok(AdmissionDecision::Admit(Terms { band, weight, max_running }))
}

impl Guest for Hostile {
    fn admit(request: AdmissionRequest) -> Result<AdmissionDecision, String> {
        match request.tenant_id.as_deref().unwrap_or("") {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => panic!("admission trap"),
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::<u8>::with_capacity(4 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "band" => admit(12, 1.0, None),
            "nan" => admit(1, f64::NAN, None),
            "zero-weight" => admit(1, 0.0, None),
            "zero-cap" => admit(1, 1.0, Some(0)),
            "empty-reject" => Ok(AdmissionDecision::Reject(String::new())),
            "error" => Err("no opinion".into()),
            _ => admit(0, 1.0, None),
        }
    }
}

export!(Hostile);
