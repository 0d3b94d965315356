//! Example room routing: like the default (one route per preferred language of the other members),
//! and the speaker also gets a route in their own source language: a transcript of what they said.

wit_bindgen::generate!({ path: "../../wit", world: "room-routing" });

use std::collections::BTreeMap;

struct IncludeSpeaker;

impl Guest for IncludeSpeaker {
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
        by_lang.entry(utterance.src_lang.clone()).or_default().push(utterance.session_id);
        Ok(by_lang.into_iter().map(|(tgt_lang, recipients)| Route { tgt_lang, recipients }).collect())
    }
}

export!(IncludeSpeaker);
