//! Example room routing that reads the raw-voice preferences: like `by-language` (one route per
//! distinct `preferred_lang` of the other members), except that a listener who speaks the
//! speaker's language and hears the speaker's original voice (WebRTC) gets nothing, since it
//! would only hear the same words twice. One who turned that voice off gets the result.

wit_bindgen::generate!({ path: "../../wit", world: "room-routing" });

use std::collections::BTreeMap;

use switchboard::policy::host;

struct SameLanguageByVoice;

impl Guest for SameLanguageByVoice {
    fn route(
        utterance: Utterance,
        members: Vec<Member>,
        _availability: Vec<Availability>,
    ) -> Result<Vec<Route>, String> {
        let mut by_lang: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in members.into_iter().filter(|m| m.session_id != utterance.session_id) {
            let Some(lang) = m.preferred_lang else { continue };
            let hears_voice = !host::raw_voice_off(&m.session_id).contains(&utterance.session_id);
            if lang == utterance.src_lang && hears_voice {
                continue;
            }
            by_lang.entry(lang).or_default().push(m.session_id);
        }
        Ok(by_lang.into_iter().map(|(tgt_lang, recipients)| Route { tgt_lang, recipients }).collect())
    }
}

export!(SameLanguageByVoice);
