//! What a node can do, from its `node_register` / `node_heartbeat` fields: the language pairs whose
//! load indexes it joins and the service types that are ready.

use std::collections::BTreeSet;

use crate::protocol::{CapabilityByType, LanguageCapabilities, LanguagePair, clip, is_language_code};

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("invalid language code {0:?}: use 1-16 letters, digits, `-` or `_`")]
    BadLanguage(String),
    #[error("{0} language pairs exceed the limit of {1}")]
    TooManyPairs(usize, usize),
}

/// The `src>tgt` pairs a node serves: its explicit `language_pairs`, or `asr × semantic` (same
/// language included). Each target also gets `auto>tgt`, the pool of sessions whose source language
/// is detected by the node. Sorted and unique.
pub fn language_pairs(
    explicit: Option<&[LanguagePair]>,
    caps: &LanguageCapabilities,
    limit: usize,
) -> Result<Vec<String>, CapabilityError> {
    let mut pairs = BTreeSet::new();
    match explicit {
        Some(list) => {
            for p in list {
                pairs.insert((valid(&p.src)?, valid(&p.tgt)?));
            }
        }
        None => {
            for src in &caps.asr_languages {
                for tgt in &caps.semantic_languages {
                    pairs.insert((valid(src)?, valid(tgt)?));
                }
            }
        }
    }
    // The limit is on what the node declares (the fleet's cap: 16 × 16 languages); the `auto>`
    // pools derived from it come on top.
    if pairs.len() > limit {
        return Err(CapabilityError::TooManyPairs(pairs.len(), limit));
    }
    let targets: BTreeSet<&str> = pairs.iter().map(|(_, t)| *t).collect();
    let mut out: BTreeSet<String> = pairs.iter().map(|(s, t)| format!("{s}>{t}")).collect();
    out.extend(targets.iter().map(|t| format!("auto>{t}")));
    Ok(out.into_iter().collect())
}

/// Service types with `ready == true`.
pub fn ready_types(caps: &[CapabilityByType]) -> Vec<String> {
    let set: BTreeSet<&str> = caps.iter().filter(|c| c.ready).map(|c| c.kind.as_str()).collect();
    set.into_iter().filter(|k| is_language_code(k)).map(str::to_owned).collect()
}

fn valid(code: &str) -> Result<&str, CapabilityError> {
    if is_language_code(code) { Ok(code) } else { Err(CapabilityError::BadLanguage(clip(code, 32))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(asr: &[&str], sem: &[&str]) -> LanguageCapabilities {
        LanguageCapabilities {
            asr_languages: asr.iter().map(|s| s.to_string()).collect(),
            semantic_languages: sem.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pairs_are_asr_times_semantic_with_auto_sources() {
        let pairs = language_pairs(None, &caps(&["zh", "en"], &["en", "zh"]), 64).unwrap();
        assert_eq!(pairs, ["auto>en", "auto>zh", "en>en", "en>zh", "zh>en", "zh>zh"].map(String::from));
    }

    #[test]
    fn explicit_pairs_win() {
        let explicit = [LanguagePair { src: "ja".into(), tgt: "en".into() }];
        let pairs = language_pairs(Some(&explicit), &caps(&["zh"], &["zh"]), 64).unwrap();
        assert_eq!(pairs, ["auto>en", "ja>en"].map(String::from));
    }

    #[test]
    fn bad_codes_and_too_many_pairs_are_refused() {
        assert!(language_pairs(None, &caps(&["z h"], &["en"]), 64).is_err());
        assert!(language_pairs(None, &caps(&["a{b}"], &["en"]), 64).is_err());
        let many: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            language_pairs(None, &caps(&many, &many), 256),
            Err(CapabilityError::TooManyPairs(400, 256))
        ));
        let sixteen = &many[..16];
        let pairs = language_pairs(None, &caps(sixteen, sixteen), 256).expect("16 × 16 is the fleet's cap");
        assert_eq!(pairs.len(), 256 + 16, "plus an auto> pool per target");
    }
}
