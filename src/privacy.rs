//! Pseudonymization of patient identifiers (`privacy.pseudonymize`).
//!
//! With a key, PatientID, PatientName and AccessionNumber are replaced by
//! `hex(HMAC-SHA256(key, value))` in the worker, right after the file is derived and before
//! any record is built: the image and state topics, the dead-letter topic and every sink table
//! only ever see the pseudonym. The same value under the same key always gives the same
//! pseudonym, so analytics can count patients and join studies; without the key a pseudonym
//! can be neither reversed nor confirmed by hashing a guessed identifier (what a plain hash
//! would allow for a short PatientID).
//!
//! Empty values stay empty (there is nothing to protect, and one pseudonym shared by every
//! instance without a PatientID would suggest they are one patient). Message keys are computed
//! from the records, so they hash the pseudonym too.
//!
//! A dead letter carries (a prefix of) the store message. With pseudonymization on, a payload
//! that is a JSON object has the same three fields replaced (`patient_id`, `patient_name`,
//! `accession_number`, wherever the store system put them at the top level); any other
//! payload is withheld and replaced by a note with its size — it cannot be shown to hold no
//! identifier. The message itself is still on the input topic at the dead letter's offset.
//!
//! Not covered: identifiers inside file paths (archives laid out by PatientID), which are kept
//! as the store message named them, and attributes beyond the three (birth date, sex, ...).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::compute::InstanceMeta;
use crate::config::PrivacyConfig;
use crate::model::DicomStoreMeta;

type HmacSha256 = Hmac<Sha256>;

/// Top-level fields of a store message's JSON replaced in dead-letter payloads.
const PAYLOAD_FIELDS: [&str; 3] = ["patient_id", "patient_name", "accession_number"];

/// Replaces identifiers by keyed pseudonyms, or leaves everything as is when off.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Pseudonymizer")
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl Pseudonymizer {
    /// Off: every value passes through.
    pub fn off() -> Pseudonymizer {
        Pseudonymizer { mac: None }
    }

    /// From a validated config (`Config::validate` checked the key's length).
    pub fn new(cfg: &PrivacyConfig) -> Pseudonymizer {
        if !cfg.pseudonymize {
            return Pseudonymizer::off();
        }
        // HMAC takes keys of any length; this cannot fail.
        Pseudonymizer {
            mac: HmacSha256::new_from_slice(cfg.key.as_bytes()).ok(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.mac.is_some()
    }

    /// The pseudonym of `value` (hex HMAC-SHA256); empty stays empty; off returns it as is.
    pub fn pseudonym(&self, value: &str) -> String {
        match &self.mac {
            Some(mac) if !value.is_empty() => {
                let digest = mac.clone().chain_update(value.as_bytes()).finalize();
                hex(&digest.into_bytes())
            }
            _ => value.to_string(),
        }
    }

    fn replace(&self, value: &mut String) {
        if self.enabled() && !value.is_empty() {
            *value = self.pseudonym(value);
        }
    }

    /// Pseudonymize a derived instance's identifiers in place.
    pub fn instance(&self, meta: &mut InstanceMeta) {
        self.replace(&mut meta.patient_id);
        self.replace(&mut meta.patient_name);
        self.replace(&mut meta.accession_number);
    }

    /// Pseudonymize the identifiers a store message may carry.
    pub fn store_message(&self, meta: &mut DicomStoreMeta) {
        if let Some(p) = meta.patient_id.as_mut() {
            self.replace(p);
        }
    }

    /// What a dead letter may show of a payload (already capped by the caller).
    pub fn payload(&self, text: String) -> String {
        if !self.enabled() {
            return text;
        }
        let Ok(serde_json::Value::Object(mut obj)) =
            serde_json::from_str::<serde_json::Value>(&text)
        else {
            return format!(
                "[payload withheld: pseudonymization is on and it is not a complete JSON object; {} bytes]",
                text.len()
            );
        };
        for field in PAYLOAD_FIELDS {
            if let Some(serde_json::Value::String(v)) = obj.get_mut(field) {
                self.replace(v);
            }
        }
        serde_json::Value::Object(obj).to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(key: &str) -> Pseudonymizer {
        Pseudonymizer::new(&PrivacyConfig {
            pseudonymize: true,
            key: key.into(),
        })
    }

    #[test]
    fn matches_the_rfc_4231_hmac_sha256_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            on("Jefe").pseudonym("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn is_keyed_stable_and_leaves_empty_values() {
        let a = on(&"a".repeat(32));
        let b = on(&"b".repeat(32));
        assert_eq!(a.pseudonym("PAT-1"), a.pseudonym("PAT-1"));
        assert_ne!(a.pseudonym("PAT-1"), a.pseudonym("PAT-2"));
        assert_ne!(a.pseudonym("PAT-1"), b.pseudonym("PAT-1"));
        assert_eq!(a.pseudonym("PAT-1").len(), 64);
        assert_eq!(a.pseudonym(""), "");
        let off = Pseudonymizer::off();
        assert_eq!(off.pseudonym("PAT-1"), "PAT-1");
        assert!(!format!("{a:?}").contains("aaaa"));
    }

    #[test]
    fn replaces_the_three_identifiers_of_an_instance() {
        let p = on(&"k".repeat(32));
        let mut meta = InstanceMeta {
            patient_id: "PAT-1".into(),
            patient_name: "Doe^Jane".into(),
            accession_number: "ACC-9".into(),
            study_uid: "1.2.3".into(),
            ..InstanceMeta::default()
        };
        p.instance(&mut meta);
        assert_eq!(meta.patient_id, p.pseudonym("PAT-1"));
        assert_eq!(meta.patient_name, p.pseudonym("Doe^Jane"));
        assert_eq!(meta.accession_number, p.pseudonym("ACC-9"));
        assert_eq!(meta.study_uid, "1.2.3");
    }

    #[test]
    fn dead_letter_payloads_keep_no_identifier() {
        let p = on(&"k".repeat(32));
        let shown = p.payload(r#"{"trace_id":"t","patient_id":"PAT-1","n":1}"#.into());
        assert!(!shown.contains("PAT-1"), "{shown}");
        assert!(shown.contains(&p.pseudonym("PAT-1")));
        assert!(shown.contains("\"trace_id\":\"t\""));
        let shown = p.payload("not json PAT-1".into());
        assert!(
            !shown.contains("PAT-1") && shown.contains("withheld"),
            "{shown}"
        );
        // A payload cut by the cap is not a complete object: withheld.
        let shown = p.payload(r#"{"patient_id":"PAT-1","x":"#.into());
        assert!(!shown.contains("PAT-1"), "{shown}");
        assert_eq!(
            Pseudonymizer::off().payload("not json PAT-1".into()),
            "not json PAT-1"
        );
    }
}
