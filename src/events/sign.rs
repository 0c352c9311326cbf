//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>, "Verifying webhook
//! authenticity"): `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`,
//! with the key given as base64, optionally prefixed `whsec_`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// A signing key's bytes, wiped when dropped; `Debug` never shows them.
#[derive(Clone)]
pub struct SigningKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(redacted)")
    }
}

impl SigningKey {
    /// The key as the spec writes it: `whsec_` (optional) and base64 of 24 to 64 random bytes.
    /// The error never contains the text.
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let b64 = text.trim();
        let b64 = b64.strip_prefix("whsec_").unwrap_or(b64);
        let bytes = Zeroizing::new(STANDARD.decode(b64).map_err(|_| {
            "is not a Standard Webhooks key: base64, optionally prefixed whsec_".to_string()
        })?);
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!(
                "holds a {}-byte key; Standard Webhooks keys are 24 to 64 bytes (e.g. whsec_ and base64 of 32 random bytes)",
                bytes.len()
            ));
        }
        Ok(SigningKey(bytes))
    }

    /// The `webhook-signature` header value for one delivery attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests (the Python package's
    /// `test_webhook.py`, the JavaScript one's `index.test.ts`): this key, id, timestamp and
    /// payload sign to this value.
    #[test]
    fn signs_the_reference_libraries_example() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // The prefix is optional.
        let bare = SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            bare.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_bad_key_is_refused_without_echoing_it() {
        let e = SigningKey::parse("whsec_not base64!").unwrap_err();
        assert!(!e.contains("not base64!"), "{e}");
        let e = SigningKey::parse("whsec_c2hvcnQ=").unwrap_err();
        assert!(e.contains("5-byte key"), "{e}");
        assert_eq!(
            format!(
                "{:?}",
                SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
            ),
            "SigningKey(redacted)"
        );
    }
}
