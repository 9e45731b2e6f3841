//! Mode `jwks`: tokens of an external authorization server (RS256 and ES256), its keys from a
//! file or a URL, key rotation by `kid`, hostile tokens, and how discovery and the
//! CapabilityStatement describe each mode.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pivot_fhir::auth::AuthMode;
use pivot_fhir::{Application, Settings};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, body, send};

const ISSUER: &str = "https://auth.example.org/realms/pivot";
const AUDIENCE: &str = "https://pivot.example.org/fhir";

/// A signing key of the external authorization server.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn ec_key(kid: &str) -> TestKey {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let document = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap_or_else(|_| panic!("EC key"));
    test_key(
        kid,
        Algorithm::ES256,
        EncodingKey::from_ec_der(document.as_ref()),
    )
}

fn rsa_key(kid: &str) -> TestKey {
    use aws_lc_rs::encoding::AsDer;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .unwrap_or_else(|_| panic!("RSA key"));
    let pkcs8 = pair.as_der().unwrap_or_else(|_| panic!("RSA key DER"));
    let pkcs1 = pkcs1_of_pkcs8(pkcs8.as_ref());
    test_key(kid, Algorithm::RS256, EncodingKey::from_rsa_der(&pkcs1))
}

fn test_key(kid: &str, alg: Algorithm, encoding: EncodingKey) -> TestKey {
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg)
        .unwrap_or_else(|err| panic!("JWK: {err}"));
    jwk.common.key_id = Some(kid.to_string());
    TestKey {
        kid: kid.to_string(),
        alg,
        encoding,
        jwk: serde_json::to_value(&jwk).unwrap_or_default(),
    }
}

/// The RSAPrivateKey (PKCS#1) inside a PrivateKeyInfo (PKCS#8): the last element of the outer
/// SEQUENCE, an OCTET STRING.
fn pkcs1_of_pkcs8(der: &[u8]) -> Vec<u8> {
    fn header(der: &[u8], at: usize) -> (usize, usize) {
        let first = der[at + 1];
        if first < 0x80 {
            (at + 2, first as usize)
        } else {
            let count = (first & 0x7f) as usize;
            let length = der[at + 2..at + 2 + count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (at + 2 + count, length)
        }
    }
    let (mut at, _) = header(der, 0); // SEQUENCE
    for _ in 0..2 {
        // version INTEGER, AlgorithmIdentifier SEQUENCE
        let (start, length) = header(der, at);
        at = start + length;
    }
    assert_eq!(der[at], 0x04, "OCTET STRING");
    let (start, length) = header(der, at);
    der[start..start + length].to_vec()
}

fn key_set(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

fn claims(scope: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ehr-vendor",
        "azp": "ehr-vendor",
        "exp": now + 600,
        "iat": now,
        "scope": scope,
    })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap_or_else(|err| panic!("{err}"))
}

fn with(mut claims: Value, changes: Value) -> Value {
    if let (Some(map), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            map.insert(k.clone(), v.clone());
        }
    }
    claims
}

async fn status_with(app: &TestApp, token: &str, method: reqwest::Method, path: &str) -> u16 {
    let mut request = reqwest::Client::new()
        .request(method.clone(), format!("{}/{path}", app.base))
        .header("Authorization", format!("Bearer {token}"));
    if method == reqwest::Method::PUT {
        request = request
            .header("Content-Type", "application/fhir+json")
            .body(json!({"resourceType":"Patient","id":"p","active":true}).to_string());
    }
    send(request).await.status().as_u16()
}

fn external(settings: &mut Settings) {
    settings.auth = AuthMode::Jwks;
    settings.token_issuer = ISSUER.into();
    settings.token_audience = AUDIENCE.into();
    settings.jwks_min_refresh_seconds = 0;
}

async fn each_backend(test: impl AsyncFn(Backend)) {
    test(Backend::Sqlite).await;
    if crate::helpers::postgres_url().is_some() {
        test(Backend::Postgres).await;
    } else {
        eprintln!("PostgreSQL part skipped: DATABASE_URL names no PostgreSQL server");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_checked_against_a_key_file_with_rotation() {
    each_backend(async |backend| {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let file = dir.path().join("jwks.json");
        let (ec, rsa) = (ec_key("ec-1"), rsa_key("rsa-1"));
        std::fs::write(&file, key_set(&[&ec, &rsa]).to_string()).unwrap_or_default();
        let path = file.clone();
        let app = TestApp::spawn_with(backend, move |s| {
            external(s);
            s.jwks_file = Some(path);
        })
        .await
        .unwrap_or_else(|| panic!("server did not start"));

        // RS256 and ES256 both work; scopes (string or `scp` list) are honoured
        let writer = sign(&rsa, &claims("system/*.cruds"));
        assert_eq!(
            status_with(&app, &writer, reqwest::Method::PUT, "Patient/p").await,
            201
        );
        let reader = sign(
            &ec,
            &with(
                claims(""),
                json!({"scope": null, "scp": ["system/Patient.rs"]}),
            ),
        );
        assert_eq!(
            status_with(&app, &reader, reqwest::Method::GET, "Patient/p").await,
            200
        );
        let other_type = sign(&ec, &claims("system/Observation.rs"));
        assert_eq!(
            status_with(&app, &other_type, reqwest::Method::GET, "Patient/p").await,
            403
        );

        // hostile tokens: each 401
        let good = claims("system/*.cruds");
        let now = chrono::Utc::now().timestamp();
        let rsa_public = rsa.jwk.to_string();
        let payload = URL_SAFE_NO_PAD.encode(good.to_string());
        let hs256 = {
            let key = EncodingKey::from_secret(rsa_public.as_bytes());
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("rsa-1".into());
            jsonwebtoken::encode(&header, &good, &key).unwrap_or_default()
        };
        let rsa_signed_as_ec = {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("ec-1".into());
            jsonwebtoken::encode(&header, &good, &rsa.encoding).unwrap_or_default()
        };
        let valid = sign(&rsa, &good);
        let parts: Vec<&str> = valid.split('.').collect();
        let hostile = [
            (
                "alg none",
                format!(
                    "{}.{payload}.",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"rsa-1"}"#)
                ),
            ),
            ("HS256 with the public key", hs256),
            ("RS256 under an EC key id", rsa_signed_as_ec),
            (
                "expired",
                sign(&rsa, &with(good.clone(), json!({"exp": now - 3600}))),
            ),
            (
                "not yet valid",
                sign(&rsa, &with(good.clone(), json!({"nbf": now + 3600}))),
            ),
            (
                "wrong issuer",
                sign(
                    &rsa,
                    &with(good.clone(), json!({"iss": "https://evil.example"})),
                ),
            ),
            (
                "wrong audience",
                sign(&rsa, &with(good.clone(), json!({"aud": "someone-else"}))),
            ),
            (
                "no scope",
                sign(&rsa, &with(good.clone(), json!({"scope": null}))),
            ),
            (
                "tampered payload",
                format!(
                    "{}.{}.{}",
                    parts[0],
                    URL_SAFE_NO_PAD
                        .encode(with(good.clone(), json!({"sub": "mallory"})).to_string()),
                    parts[2]
                ),
            ),
        ];
        for (name, token) in hostile {
            assert_eq!(
                status_with(&app, &token, reqwest::Method::GET, "Patient/p").await,
                401,
                "{name}"
            );
        }

        // a key the server has not seen: 401 until the authorization server publishes it
        let rotated = ec_key("ec-2");
        let new_token = sign(&rotated, &claims("system/*.rs"));
        assert_eq!(
            status_with(&app, &new_token, reqwest::Method::GET, "Patient/p").await,
            401
        );
        std::fs::write(&file, key_set(&[&rotated]).to_string()).unwrap_or_default();
        assert_eq!(
            status_with(&app, &new_token, reqwest::Method::GET, "Patient/p").await,
            200
        );
        // the withdrawn keys no longer count, even for tokens verified before
        assert_eq!(
            status_with(&app, &writer, reqwest::Method::GET, "Patient/p").await,
            401
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_fetched_from_a_url_and_refetches_are_rate_limited() {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let key = rsa_key("rsa-url");
    let published = Arc::new(Mutex::new(key_set(&[&key])));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (shared, counter) = (published.clone(), fetches.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|err| panic!("{err}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let server = HttpServer::new(move || {
        let (shared, counter) = (shared.clone(), counter.clone());
        App::new().route(
            "/certs",
            web::get().to(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let keys = shared.lock().map(|k| k.clone()).unwrap_or_default();
                async move { HttpResponse::Ok().json(keys) }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|err| panic!("{err}"))
    .run();
    let authorization_server = server.handle();
    tokio::spawn(server);

    let url = format!("http://127.0.0.1:{port}/certs");
    let jwks_url = url.clone();
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| {
        external(s);
        s.jwks_url = Some(jwks_url);
        s.jwks_min_refresh_seconds = 3600;
        s.oauth_token_url = Some("https://auth.example.org/token".into());
    })
    .await
    .unwrap_or_else(|| panic!("server did not start"));
    let token = sign(&key, &claims("system/*.cruds"));
    assert_eq!(
        status_with(&app, &token, reqwest::Method::PUT, "Patient/p").await,
        201
    );
    let after_start = fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&after_start), "{after_start} fetches");
    // tokens with made-up key ids do not make the server fetch again and again
    for n in 0..20 {
        let stranger = sign(&ec_key(&format!("made-up-{n}")), &claims("system/*.rs"));
        assert_eq!(
            status_with(&app, &stranger, reqwest::Method::GET, "Patient/p").await,
            401
        );
    }
    assert!(fetches.load(std::sync::atomic::Ordering::SeqCst) <= 2);

    // discovery and the CapabilityStatement point at the external server
    let smart = body(
        send(reqwest::Client::new().get(format!("{}/.well-known/smart-configuration", app.root)))
            .await,
    )
    .await;
    assert_eq!(smart["pivot_auth_mode"], "jwks");
    assert_eq!(smart["jwks_uri"], url);
    assert_eq!(smart["token_endpoint"], "https://auth.example.org/token");
    assert_eq!(smart["issuer"], ISSUER);
    let metadata =
        body(send(reqwest::Client::new().get(format!("{}/metadata", app.base))).await).await;
    let security = &metadata["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    assert_eq!(security["extension"][0]["extension"][0]["url"], "token");
    assert_eq!(
        security["extension"][0]["extension"][0]["valueUri"],
        "https://auth.example.org/token"
    );
    authorization_server.stop(false).await;
}

#[tokio::test]
async fn jwks_mode_needs_a_key_source() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let mut settings = Settings::new(
        "127.0.0.1:0",
        format!("sqlite://{}", dir.path().join("t.db").display()),
    );
    settings.data_dir = Some(dir.path().to_path_buf());
    settings.auth = AuthMode::Jwks;
    let Err(err) = Application::build(&settings) else {
        panic!("started without a key source");
    };
    assert!(format!("{err:#}").contains("--jwks-url"), "{err:#}");
    settings.jwks_file = Some(dir.path().join("missing.json"));
    let Err(err) = Application::build(&settings) else {
        panic!("started with a missing key file");
    };
    assert!(format!("{err:#}").contains("missing.json"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_security_section_describe_the_mode() {
    let local = TestApp::spawn(Backend::Sqlite)
        .await
        .unwrap_or_else(|| panic!("server did not start"));
    let metadata = body(local.get("metadata").await).await;
    let security = &metadata["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    assert_eq!(
        security["extension"][0]["extension"][0]["valueUri"],
        format!("{}/auth/token", local.root)
    );

    let open = TestApp::spawn_with(Backend::Sqlite, |s| s.auth = AuthMode::None)
        .await
        .unwrap_or_else(|| panic!("server did not start"));
    let metadata = body(open.get("metadata").await).await;
    let security = &metadata["rest"][0]["security"];
    assert!(security.get("service").is_none(), "{security}");
    assert!(
        security["description"]
            .as_str()
            .unwrap_or_default()
            .contains("--auth none")
    );
    let smart =
        send(reqwest::Client::new().get(format!("{}/.well-known/smart-configuration", open.root)))
            .await;
    assert_eq!(smart.status().as_u16(), 404);
}
