//! The server's own signing key (mode `local`): an ECDSA P-256 key created on first start in the
//! data folder, readable only by the server's user (0600).

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// A key pair for issuing (and checking) access tokens.
pub struct SigningKey {
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public key as a JWK, with `kid`, `use` and `alg`.
    pub jwk: Jwk,
    pub kid: String,
}

const FILE_NAME: &str = "signing-key.pem";

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Loads the key from `data_dir`, creating it (and the folder) on first use.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = key_path(data_dir);
    let der = if path.exists() {
        let pem = std::fs::read_to_string(&path)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        STANDARD
            .decode(body.trim())
            .map_err(|_| anyhow::anyhow!("{} is not a PEM private key", path.display()))?
    } else {
        std::fs::create_dir_all(data_dir)
            .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", data_dir.display()))?;
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("cannot generate a signing key"))?;
        let der = document.as_ref().to_vec();
        let encoded = STANDARD.encode(&der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        write_private(&path, &pem)?;
        der
    };
    from_pkcs8(&der)
}

fn from_pkcs8(der: &[u8]) -> anyhow::Result<SigningKey> {
    let encoding = EncodingKey::from_ec_der(der);
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
        .map_err(|err| anyhow::anyhow!("unusable signing key: {err}"))?;
    let decoding = DecodingKey::from_jwk(&jwk)
        .map_err(|err| anyhow::anyhow!("unusable signing key: {err}"))?;
    let kid = match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) => {
            ec.x.chars().take(16).collect()
        }
        _ => "pivot".to_string(),
    };
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    Ok(SigningKey {
        encoding,
        decoding,
        jwk,
        kid,
    })
}

#[cfg(unix)]
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", path.display()))?;
    file.write_all(pem.as_bytes())
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))?;
    file.sync_all()
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem)
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))
}
