//! Decoding and checking a store message (the input topic's JSON): the first step of every
//! message, on the chunk path and the one-message path alike.

use crate::model::DicomStoreMeta;

use super::ProcessError;

/// Decode and check a store message.
pub fn parse_store_meta(payload: &[u8]) -> Result<DicomStoreMeta, ProcessError> {
    if payload.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ProcessError::EmptyPayload);
    }
    let meta: DicomStoreMeta = serde_json::from_slice(payload).map_err(ProcessError::BadJson)?;
    if meta.trace_id.trim().is_empty() {
        return Err(ProcessError::InvalidMessage("trace_id is empty"));
    }
    if meta.tenant_id.trim().is_empty() {
        return Err(ProcessError::InvalidMessage("tenant_id is empty"));
    }
    if meta.file_path.trim().is_empty() {
        return Err(ProcessError::InvalidMessage("file_path is empty"));
    }
    if !meta.file_path.starts_with('/') {
        return Err(ProcessError::InvalidMessage("file_path is not absolute"));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reason;

    #[test]
    fn parse_classifies_bad_payloads() {
        let cases: Vec<(&[u8], Reason)> = vec![
            (b"", Reason::EmptyPayload),
            (b"  \n", Reason::EmptyPayload),
            (b"{not json", Reason::BadJson),
            (b"[1,2]", Reason::BadJson),
            (br#"{"trace_id":"a","tenant_id":"t"}"#, Reason::BadJson),
            (
                br#"{"trace_id":"","tenant_id":"t","file_path":"/x","received_at":"2026-01-01T00:00:00Z"}"#,
                Reason::InvalidMessage,
            ),
            (
                br#"{"trace_id":"a","tenant_id":"t","file_path":" ","received_at":"2026-01-01T00:00:00Z"}"#,
                Reason::InvalidMessage,
            ),
        ];
        for (payload, want) in cases {
            let err = parse_store_meta(payload).unwrap_err();
            assert_eq!(
                err.reason(),
                want,
                "{:?}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn error_text_can_leave_out_quoted_values() {
        let err = parse_store_meta(
            br#"{"trace_id":"a","tenant_id":"t","file_path":"/x","file_size":"PAT-123"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("PAT-123"), "{err}");
        let text = err.text_without_values();
        assert!(!text.contains("PAT-123"), "{text}");
        assert!(text.contains("line 1 column"), "{text}");
    }
}
