//! Authenticating deliveries: the secret in the URL, and optionally an HMAC header.

use hmac::{Hmac, Mac};
use kaiten_client::Secret;
use sha2::Sha256;

/// Compares two byte strings in time that depends only on the length of `presented`, never on
/// where the contents differ: every byte is xor-folded into one accumulator, with no early exit.
/// Different lengths compare unequal (after the same loop).
///
/// Pass the value from the request as `presented` and the configured secret as `expected`.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, byte) in presented.iter().enumerate() {
        // Past the end of `expected` compare against 0: the length difference already decided.
        let other = expected.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(byte ^ other);
    }
    std::hint::black_box(diff) == 0
}

/// Hex HMAC-SHA256 of `body` under `key`: what a signing proxy puts in the header named by
/// [`WebhookAuth::with_hmac_header`] (optionally prefixed with `sha256=`).
pub fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes().chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// How deliveries are authenticated.
///
/// Kaiten signs nothing, so the operator puts a long random secret in the webhook URL
/// (`https://host/webhooks/kaiten/<secret>`). When a signing proxy sits in front, set
/// [`WebhookAuth::hmac_header`] as well: the delivery must then also carry that header with the hex
/// HMAC-SHA256 of the body, keyed with the same secret.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebhookAuth {
    /// The secret of the delivery URL (and the HMAC key). An empty secret accepts nothing.
    pub secret: Secret,
    /// The header carrying the body's HMAC (e.g. `X-Signature`), when signatures are required.
    pub hmac_header: Option<String>,
}

impl WebhookAuth {
    /// Authentication by the URL secret alone.
    pub fn new(secret: impl Into<Secret>) -> Self {
        Self { secret: secret.into(), hmac_header: None }
    }

    /// Also requires the header `name` to hold the hex HMAC-SHA256 of the body (`sha256=` prefix
    /// allowed).
    pub fn with_hmac_header(mut self, name: impl Into<String>) -> Self {
        self.hmac_header = Some(name.into());
        self
    }

    /// Whether a delivery with this URL secret, signature header value and body is authentic.
    pub fn verify(&self, path_secret: &str, signature: Option<&str>, body: &[u8]) -> bool {
        let expected = self.secret.expose().as_bytes();
        // Evaluate both checks whatever the first one says (no shortcut on the URL secret).
        let secret_ok = !expected.is_empty() & constant_time_eq(path_secret.as_bytes(), expected);
        let signature_ok = match &self.hmac_header {
            None => true,
            Some(_) => signature.is_some_and(|sig| self.signature_matches(sig, body)),
        };
        secret_ok & signature_ok
    }

    fn signature_matches(&self, signature: &str, body: &[u8]) -> bool {
        let hex = signature.trim();
        let hex = hex.strip_prefix("sha256=").unwrap_or(hex);
        let Some(bytes) = decode_hex(hex) else { return false };
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.expose().as_bytes()) else {
            return false;
        };
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_equal_unequal_and_lengths() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"s3cret-s3cret-s3cret", b"s3cret-s3cret-s3cret"));
        assert!(!constant_time_eq(b"s3cret-s3cret-s3creT", b"s3cret-s3cret-s3cret"));
        assert!(!constant_time_eq(b"X3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret\0", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b""));
        // Lengths differing by a multiple of 256 are still different lengths.
        assert!(!constant_time_eq(&[0u8; 256], &[]));
    }

    #[test]
    fn hex_and_hmac() {
        assert_eq!(decode_hex("00ff10Ab"), Some(vec![0, 255, 16, 171]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let auth = WebhookAuth::new("Jefe").with_hmac_header("X-Signature");
        let body = b"what do ya want for nothing?";
        let sig = hmac_sha256_hex(b"Jefe", body);
        assert!(auth.verify("Jefe", Some(&sig), body));
        assert!(auth.verify("Jefe", Some(&format!("sha256={}", sig.to_uppercase())), body));
        assert!(!auth.verify("Jefe", None, body));
        assert!(!auth.verify("Jefe", Some(&sig), b"another body"));
        assert!(!auth.verify("nope", Some(&sig), body));
    }

    #[test]
    fn empty_secret_accepts_nothing() {
        assert!(!WebhookAuth::new("").verify("", None, b"{}"));
    }
}
