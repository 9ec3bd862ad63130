//! Keys as cosign writes them: public keys in PEM (`PUBLIC KEY`, PKIX/SPKI) of type ECDSA
//! P-256, Ed25519 or RSA; private keys as PKCS#8 encrypted in cosign's format (PEM label
//! `ENCRYPTED SIGSTORE PRIVATE KEY`, older `ENCRYPTED COSIGN PRIVATE KEY`): a JSON document
//! `{"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"}, "cipher": {"name":
//! "nacl/secretbox", "nonce"}, "ciphertext"}` (base64 fields), the secretbox key being
//! scrypt(passphrase, salt, N, r, p, 32) and the plaintext the PKCS#8 DER key.
//!
//! Signatures are what cosign makes: ECDSA P-256 over SHA-256 in ASN.1 DER (RFC 6979, so the
//! same key signs the same payload to the same bytes), Ed25519 over the message, and, to
//! verify only, RSA PKCS#1 v1.5 over SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// PEM label pare writes for private keys (cosign 2).
pub const PRIVATE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label cosign 1 wrote.
pub const PRIVATE_LABEL_V1: &str = "ENCRYPTED COSIGN PRIVATE KEY";
pub const PUBLIC_LABEL: &str = "PUBLIC KEY";

/// scrypt cost parameters cosign writes (N = 2^15 or 2^16, r = 8, p = 1); anything else is
/// refused, so a hostile key file cannot ask for gigabytes of memory.
const SCRYPT_N: [u32; 2] = [32768, 65536];
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

/// Largest key file read.
pub const MAX_KEY_FILE: u64 = 64 << 10;

fn key_err(what: impl Into<String>) -> Error {
    Error::Key(what.into())
}

/// A public key that verifies signatures.
#[derive(Clone, Debug)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    /// A `PUBLIC KEY` PEM document.
    pub fn from_pem(text: &str) -> Result<PublicKey> {
        let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
            .map_err(|e| key_err(format!("not a PEM public key: {e}")))?;
        if label != PUBLIC_LABEL {
            return Err(key_err(format!(
                "a PEM `{label}`, not a `{PUBLIC_LABEL}` (pass the .pub file)"
            )));
        }
        PublicKey::from_spki_der(&der)
    }

    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey> {
        use p256::pkcs8::DecodePublicKey as _;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(k));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::Ed25519(k));
        }
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            return Ok(PublicKey::Rsa(k));
        }
        Err(key_err(
            "an unsupported public key (cosign keys are ECDSA P-256, Ed25519 or RSA)",
        ))
    }

    /// Whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        use signature::Verifier as _;
        match self {
            PublicKey::P256(k) => p256::ecdsa::DerSignature::from_bytes(sig)
                .ok()
                .and_then(|s| p256::ecdsa::Signature::try_from(s).ok())
                .is_some_and(|s| k.verify(msg, &s).is_ok()),
            PublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(msg, &s).is_ok()),
            PublicKey::Rsa(k) => {
                let v = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k.clone());
                rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| v.verify(msg, &s).is_ok())
            }
        }
    }

    pub fn to_pem(&self) -> Result<String> {
        use p256::pkcs8::EncodePublicKey as _;
        let lf = p256::pkcs8::LineEnding::LF;
        match self {
            PublicKey::P256(k) => k.to_public_key_pem(lf),
            PublicKey::Ed25519(k) => k.to_public_key_pem(lf),
            PublicKey::Rsa(k) => k.to_public_key_pem(lf),
        }
        .map_err(|e| key_err(format!("encode the public key: {e}")))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "ECDSA P-256",
            PublicKey::Ed25519(_) => "Ed25519",
            PublicKey::Rsa(_) => "RSA",
        }
    }
}

/// A private key that signs.
pub enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl PrivateKey {
    /// A new ECDSA P-256 key, as `cosign generate-key-pair` makes.
    pub fn generate() -> PrivateKey {
        PrivateKey::P256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey> {
        use p256::pkcs8::DecodePrivateKey as _;
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::P256(k));
        }
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::Ed25519(k));
        }
        if rsa::RsaPrivateKey::from_pkcs8_der(der).is_ok() {
            return Err(key_err(
                "an RSA private key: pare signs with ECDSA P-256 (as `pare keygen` and `cosign generate-key-pair` make) or Ed25519 keys",
            ));
        }
        Err(key_err(
            "an unsupported private key (expected ECDSA P-256 or Ed25519 in PKCS#8)",
        ))
    }

    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>> {
        use p256::pkcs8::EncodePrivateKey as _;
        match self {
            PrivateKey::P256(k) => k.to_pkcs8_der(),
            PrivateKey::Ed25519(k) => k.to_pkcs8_der(),
        }
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| key_err(format!("encode the private key: {e}")))
    }

    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    /// The signature of `msg` (deterministic for both key types).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use signature::Signer as _;
        match self {
            PrivateKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            PrivateKey::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
        }
    }

    /// cosign's encrypted PEM, under `passphrase`.
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<String> {
        let der = self.to_pkcs8_der()?;
        let json = encrypt(&der, passphrase)?;
        pem_rfc7468::encode_string(PRIVATE_LABEL, pem_rfc7468::LineEnding::LF, &json)
            .map_err(|e| key_err(format!("encode the private key: {e}")))
    }

    /// Read cosign's encrypted PEM.
    pub fn from_encrypted_pem(text: &str, passphrase: &[u8]) -> Result<PrivateKey> {
        let (label, body) = pem_rfc7468::decode_vec(text.trim().as_bytes())
            .map_err(|e| key_err(format!("not a PEM private key: {e}")))?;
        if label != PRIVATE_LABEL && label != PRIVATE_LABEL_V1 {
            return Err(key_err(format!(
                "a PEM `{label}`, not cosign's `{PRIVATE_LABEL}`"
            )));
        }
        let der = decrypt(&body, passphrase)?;
        PrivateKey::from_pkcs8_der(&der)
    }
}

mod b64 {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.trim()).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u32,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Encrypted {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

fn box_key(kdf: &Kdf, passphrase: &[u8]) -> Result<[u8; 32]> {
    if kdf.name != "scrypt" {
        return Err(key_err(format!("unknown key derivation {:?}", kdf.name)));
    }
    let p = &kdf.params;
    if !SCRYPT_N.contains(&p.n) || p.r != SCRYPT_R || p.p != SCRYPT_P {
        return Err(key_err(format!(
            "unexpected scrypt parameters N={} r={} p={} (cosign writes N=32768 or 65536, r=8, p=1)",
            p.n, p.r, p.p
        )));
    }
    let log_n = p.n.trailing_zeros() as u8;
    let params = scrypt::Params::new(log_n, p.r, p.p, 32)
        .map_err(|e| key_err(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(passphrase, &kdf.salt, &params, &mut key)
        .map_err(|e| key_err(format!("scrypt: {e}")))?;
    Ok(key)
}

/// cosign's encryption of `plaintext` under `passphrase` (random salt and nonce).
pub fn encrypt(plaintext: &[u8], passphrase: &[u8]) -> Result<Vec<u8>> {
    use crypto_secretbox::aead::{Aead as _, KeyInit as _};
    use rand_core::RngCore as _;
    let mut salt = vec![0u8; 32];
    let mut nonce = vec![0u8; 24];
    rand_core::OsRng.fill_bytes(&mut salt);
    rand_core::OsRng.fill_bytes(&mut nonce);
    let kdf = Kdf {
        name: "scrypt".into(),
        params: ScryptParams {
            n: SCRYPT_N[0],
            r: SCRYPT_R,
            p: SCRYPT_P,
        },
        salt,
    };
    let key = box_key(&kdf, passphrase)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let n = crypto_secretbox::Nonce::from_slice(&nonce);
    let ciphertext = cipher
        .encrypt(n, plaintext)
        .map_err(|_| key_err("encryption failed"))?;
    let doc = Encrypted {
        kdf,
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce,
        },
        ciphertext,
    };
    serde_json::to_vec(&doc).map_err(|e| key_err(e.to_string()))
}

/// Open cosign's encrypted document.
pub fn decrypt(doc: &[u8], passphrase: &[u8]) -> Result<Vec<u8>> {
    use crypto_secretbox::aead::{Aead as _, KeyInit as _};
    let doc: Encrypted = serde_json::from_slice(doc)
        .map_err(|e| key_err(format!("not cosign's encrypted key format: {e}")))?;
    if doc.cipher.name != "nacl/secretbox" {
        return Err(key_err(format!("unknown cipher {:?}", doc.cipher.name)));
    }
    if doc.cipher.nonce.len() != 24 {
        return Err(key_err("the secretbox nonce is not 24 bytes"));
    }
    let key = box_key(&doc.kdf, passphrase)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&doc.cipher.nonce),
            doc.ciphertext.as_slice(),
        )
        .map_err(|_| key_err("wrong passphrase (or a damaged key file)"))
}

/// Read a key file, bounded.
pub fn read_key_file(path: &std::path::Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_KEY_FILE {
        return Err(key_err(format!(
            "{}: {} bytes is too large for a key file",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Base64 as cosign writes signatures.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_key_round_trips_and_a_wrong_passphrase_fails() {
        let k = PrivateKey::generate();
        let pem = k.to_encrypted_pem(b"s3cret").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let back = PrivateKey::from_encrypted_pem(&pem, b"s3cret").unwrap();
        assert_eq!(
            back.public().to_pem().unwrap(),
            k.public().to_pem().unwrap()
        );
        assert!(PrivateKey::from_encrypted_pem(&pem, b"wrong").is_err());
        let msg = b"payload";
        let sig = back.sign(msg);
        assert_eq!(sig, k.sign(msg), "RFC 6979: deterministic");
        let public = PublicKey::from_pem(&k.public().to_pem().unwrap()).unwrap();
        assert!(public.verify(msg, &sig));
        assert!(!public.verify(b"other", &sig));
        let other = PrivateKey::generate().public();
        assert!(!other.verify(msg, &sig));
    }

    #[test]
    fn hostile_scrypt_parameters_are_refused() {
        let doc = br#"{"kdf":{"name":"scrypt","params":{"N":1073741824,"r":8,"p":1},"salt":"AAAA"},"cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"ciphertext":"AAAA"}"#;
        let e = decrypt(doc, b"x").unwrap_err().to_string();
        assert!(e.contains("unexpected scrypt parameters"), "{e}");
    }
}
