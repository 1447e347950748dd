//! The `[privacy]` section: keyed pseudonyms for patient identifiers, and the key's length
//! check.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Shortest HMAC key `privacy.pseudonymize` accepts (the SHA-256 block's security level).
pub const MIN_PSEUDONYM_KEY_BYTES: usize = 32;

/// Keyed pseudonyms for patient identifiers (off by default).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Replace PatientID, PatientName and AccessionNumber by HMAC-SHA256(key, value) in hex
    /// before any record leaves the worker (topics, dead letters, sink rows). Analytics can
    /// still join on them; nobody without the key can recover or confirm an identifier.
    pub pseudonymize: bool,
    /// The HMAC key, at least 32 bytes: from the environment only
    /// (`DICOM_PIPELINE_PRIVACY__KEY`, taken verbatim), never from a file; redacted when
    /// printed. Changing it changes every pseudonym.
    pub key: String,
}

impl PrivacyConfig {
    /// The `[privacy]` check (see [`Config::validate`](super::Config::validate)).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.pseudonymize && self.key.len() < MIN_PSEUDONYM_KEY_BYTES {
            return Err(ConfigError::Invalid(format!(
                "privacy.pseudonymize needs a key of at least {MIN_PSEUDONYM_KEY_BYTES} bytes in DICOM_PIPELINE_PRIVACY__KEY (it has {})",
                self.key.len()
            )));
        }
        Ok(())
    }
}
