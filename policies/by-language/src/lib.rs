//! The default room-routing policy: one route per distinct `preferred_lang` among the other
//! members, each to the members who asked for it. No such member: no route, so the utterance falls
//! back to single-session mode (the speaker's own target language).

wit_bindgen::generate!({ path: "../../wit", world: "room-routing" });

use std::collections::BTreeMap;

struct ByLanguage;

impl Guest for ByLanguage {
    fn route(
        utterance: Utterance,
        members: Vec<Member>,
        _availability: Vec<Availability>,
    ) -> Result<Vec<Route>, String> {
        let mut by_lang: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in members.into_iter().filter(|m| m.session_id != utterance.session_id) {
            if let Some(lang) = m.preferred_lang {
                by_lang.entry(lang).or_default().push(m.session_id);
            }
        }
        Ok(by_lang.into_iter().map(|(tgt_lang, recipients)| Route { tgt_lang, recipients }).collect())
    }
}

export!(ByLanguage);
