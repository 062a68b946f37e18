//! Paging cursors of the transparency view: opaque, and bound to the
//! subject they page through, so a forged cursor or one taken from another
//! subject's listing is refused (400) instead of leaking anything.
//!
//! A cursor is `base64url(seq as 8 big-endian bytes || tag)` where `tag` is
//! the first 16 bytes of HMAC-SHA256(key, subject_ref || seq).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::audit::SubjectKey;

const TAG_LEN: usize = 16;

/// The key cursors are tagged with.
#[derive(Clone)]
pub struct CursorKey(Hmac<Sha256>);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// Derived from the audit subject key, so cursors survive a restart and
    /// no further secret has to be kept.
    pub fn derive(subject_key: &SubjectKey) -> Self {
        let derived = subject_key.subject_ref("\u{0}onewindow transparency cursor key v1");
        Self::from_bytes(derived.as_str().as_bytes())
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(key: &[u8]) -> Self {
        // HMAC accepts keys of any length.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&[0u8; 64].into()));
        Self(mac)
    }

    fn mac(&self, subject: &[u8; 32], seq: u64) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(subject);
        mac.update(&seq.to_be_bytes());
        mac
    }

    /// The cursor continuing a listing of `subject` below `seq`.
    pub fn encode(&self, subject: &[u8; 32], seq: u64) -> String {
        let tag = self.mac(subject, seq).finalize().into_bytes();
        let mut raw = seq.to_be_bytes().to_vec();
        raw.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The seq a cursor continues from, if it was issued for `subject`.
    pub fn decode(&self, subject: &[u8; 32], cursor: &str) -> Option<u64> {
        let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if raw.len() != 8 + TAG_LEN {
            return None;
        }
        let seq = u64::from_be_bytes(raw[..8].try_into().ok()?);
        self.mac(subject, seq)
            .verify_truncated_left(&raw[8..])
            .ok()
            .map(|()| seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bound_to_their_subject() {
        let k = CursorKey::from_bytes(b"k");
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let c = k.encode(&a, 42);
        assert_eq!(k.decode(&a, &c), Some(42));
        assert_eq!(k.decode(&b, &c), None, "another subject's cursor");
        let mut raw = URL_SAFE_NO_PAD.decode(&c).unwrap();
        raw[7] ^= 1; // seq 43 with the tag of 42
        assert_eq!(k.decode(&a, &URL_SAFE_NO_PAD.encode(&raw)), None);
        assert_eq!(k.decode(&a, "42"), None);
        assert_eq!(k.decode(&a, ""), None);
        assert_eq!(CursorKey::from_bytes(b"other").decode(&a, &c), None);
    }
}
