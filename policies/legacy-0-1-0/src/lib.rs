//! Test policy: a room-routing component built against `switchboard:policy@0.1.0` (its own copy of
//! that WIT, in `wit/`), as policies deployed before 0.1.1 were. Routes every other member in one
//! route to English, so a test can tell it ran.

wit_bindgen::generate!({ path: "wit", world: "room-routing" });

struct Legacy;

impl Guest for Legacy {
    fn route(
        utterance: Utterance,
        members: Vec<Member>,
        _availability: Vec<Availability>,
    ) -> Result<Vec<Route>, String> {
        let recipients: Vec<String> =
            members.into_iter().map(|m| m.session_id).filter(|s| *s != utterance.session_id).collect();
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Route { tgt_lang: "en".into(), recipients }])
    }
}

export!(Legacy);
