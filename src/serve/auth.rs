//! Who may post events: `Authorization: Bearer TOKEN` (what the registry's
//! `notifications.endpoints[].headers` sends), the same header's value taken verbatim (Harbor
//! sends its configured auth header as is), or an HMAC-SHA256 signature of the body in a
//! GitHub-style header (`sha256=HEX`). Every comparison runs in constant time.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// The secret the service was started with (`--token-file`).
pub struct Secret(Vec<u8>);

impl Secret {
    /// The token file's contents, trimmed; an empty one is refused (it would let anyone in).
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        (!t.is_empty()).then(|| Secret(t.as_bytes().to_vec()))
    }

    /// Whether an `Authorization` header's value carries the token: `Bearer TOKEN`, or the
    /// token alone.
    pub fn authorizes(&self, header: Option<&str>) -> bool {
        let Some(h) = header.map(str::trim) else {
            return false;
        };
        let given = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .unwrap_or(h)
            .trim();
        bool::from(given.as_bytes().ct_eq(&self.0))
    }

    /// Whether `signature` (`sha256=HEX`) is the HMAC-SHA256 of `body` under the token.
    pub fn signed(&self, body: &[u8], signature: Option<&str>) -> bool {
        let Some(hex_sig) = signature.and_then(|s| s.trim().strip_prefix("sha256=")) else {
            return false;
        };
        let Ok(given) = hex::decode(hex_sig) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let s = Secret::new("s3cret\n").unwrap();
        assert!(s.authorizes(Some("Bearer s3cret")));
        assert!(s.authorizes(Some("s3cret")));
        for bad in [
            None,
            Some(""),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
        ] {
            assert!(!s.authorizes(bad), "{bad:?}");
        }
        assert!(Secret::new(" \n").is_none());
    }

    #[test]
    fn hmac_signatures() {
        let s = Secret::new("key").unwrap();
        // A signature made with the same key over the same body; any change refuses it.
        let body = b"{\"events\": []}";
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"key").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(s.signed(body, Some(&good)));
        assert!(!s.signed(b"{\"events\": [1]}", Some(&good)));
        assert!(!s.signed(body, Some("sha256=00")));
        assert!(!s.signed(body, Some("sha1=abc")));
        assert!(!s.signed(body, None));
        // An independent vector (Wikipedia's HMAC example):
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert!(s.signed(
            b"The quick brown fox jumps over the lazy dog",
            Some("sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
        ));
    }
}
