//! Authorization: tokens, SMART scopes per interaction, the patient compartment and hostile
//! tokens (each a 401, never a 500).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, header, send, token_for};

backend_tests!(
    backend_services_token_flow,
    scope_matrix,
    patient_scopes_confine_to_the_compartment,
    query_constrained_scopes,
    hostile_tokens_are_refused,
    bundles_and_operations_respect_scopes
);

async fn as_token(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let url = format!("{}/{}", app.base, path.trim_start_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("Authorization", format!("Bearer {token}"));
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/fhir+json")
            .body(body.to_string());
    }
    send(request).await
}

async fn scope_matrix(app: TestApp) {
    app.put("Patient/p1", &json!({"resourceType":"Patient","id":"p1"}))
        .await;
    app.put("Observation/o1", &json!({"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}})).await;
    let observation = json!({"resourceType":"Observation","id":"o1","status":"final","code":{"text":"y"},"subject":{"reference":"Patient/p1"}});
    // (scope, read, search, create, update, delete) on Observation
    let matrix: &[(&str, [u16; 5])] = &[
        ("system/Observation.read", [200, 200, 403, 403, 403]),
        ("system/Observation.write", [403, 403, 201, 200, 200]),
        ("system/Observation.*", [200, 200, 201, 200, 200]),
        ("system/*.*", [200, 200, 201, 200, 200]),
        ("user/Observation.rs", [200, 200, 403, 403, 403]),
        ("system/Observation.r", [200, 403, 403, 403, 403]),
        ("system/Observation.s", [403, 200, 403, 403, 403]),
        ("system/Observation.c", [403, 403, 201, 403, 403]),
        ("system/Observation.u", [403, 403, 403, 200, 403]),
        ("system/Observation.d", [403, 403, 403, 403, 200]),
        ("system/Patient.cruds", [403, 403, 403, 403, 403]),
        ("openid fhirUser", [403, 403, 403, 403, 403]),
    ];
    for (scope, expected) in matrix {
        app.put("Observation/o1", &observation).await; // undo an earlier delete
        let token = token_for(&app.data_dir, scope, None, None);
        let read = as_token(&app, &token, Method::GET, "Observation/o1", None)
            .await
            .status()
            .as_u16();
        let search = as_token(&app, &token, Method::GET, "Observation?code:text=x,y", None)
            .await
            .status()
            .as_u16();
        let create = as_token(
            &app,
            &token,
            Method::POST,
            "Observation",
            Some(observation.clone()),
        )
        .await
        .status()
        .as_u16();
        let update = as_token(
            &app,
            &token,
            Method::PUT,
            "Observation/o1",
            Some(observation.clone()),
        )
        .await
        .status()
        .as_u16();
        let delete = as_token(&app, &token, Method::DELETE, "Observation/o1", None)
            .await
            .status()
            .as_u16();
        assert_eq!([read, search, create, update, delete], *expected, "{scope}");
    }
    let forbidden = as_token(
        &app,
        &token_for(&app.data_dir, "system/Patient.rs", None, None),
        Method::GET,
        "Observation/o1",
        None,
    )
    .await;
    expect_outcome(forbidden, 403, "forbidden").await;
    // without a token: 401 with WWW-Authenticate; discovery stays public
    let anonymous = send(reqwest::Client::new().get(format!("{}/Patient/p1", app.base))).await;
    assert!(header(&anonymous, "www-authenticate").starts_with("Bearer"));
    expect_outcome(anonymous, 401, "login").await;
    assert_eq!(
        send(reqwest::Client::new().get(format!("{}/metadata", app.base)))
            .await
            .status()
            .as_u16(),
        200
    );
    let smart =
        send(reqwest::Client::new().get(format!("{}/.well-known/smart-configuration", app.root)))
            .await;
    assert_eq!(smart.status().as_u16(), 200);
    assert_eq!(
        body(smart).await["token_endpoint_auth_methods_supported"][0],
        "private_key_jwt"
    );
}

async fn patient_scopes_confine_to_the_compartment(app: TestApp) {
    for (id, patient) in [("mine", "p-a"), ("theirs", "p-b")] {
        app.put(
            &format!("Patient/{patient}"),
            &json!({"resourceType":"Patient","id":patient}),
        )
        .await;
        app.put(&format!("Observation/{id}"), &json!({"resourceType":"Observation","id":id,"status":"final","code":{"text":"x"},"subject":{"reference":format!("Patient/{patient}")}})).await;
    }
    app.put(
        "Organization/org",
        &json!({"resourceType":"Organization","id":"org","name":"Bank"}),
    )
    .await;
    let token = token_for(
        &app.data_dir,
        "patient/Observation.rs patient/Patient.rs",
        Some("p-a"),
        None,
    );
    assert_eq!(
        as_token(&app, &token, Method::GET, "Observation/mine", None)
            .await
            .status()
            .as_u16(),
        200
    );
    // another patient's resource is not revealed: the same 404 as a missing one
    expect_outcome(
        as_token(&app, &token, Method::GET, "Observation/theirs", None).await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        as_token(
            &app,
            &token,
            Method::GET,
            "Observation/theirs/_history/1",
            None,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        as_token(
            &app,
            &token,
            Method::GET,
            "Observation/theirs/_history",
            None,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    let found = body(
        as_token(
            &app,
            &token,
            Method::GET,
            "Observation?code:text=x&_include=Observation:subject",
            None,
        )
        .await,
    )
    .await;
    let ids: Vec<&str> = found["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        ids,
        vec!["mine", "p-a"],
        "search and includes stay in the compartment"
    );
    let patients = body(as_token(&app, &token, Method::GET, "Patient", None).await).await;
    assert_eq!(patients["entry"].as_array().map(Vec::len), Some(1));
    expect_outcome(
        as_token(&app, &token, Method::GET, "Organization/org", None).await,
        403,
        "forbidden",
    )
    .await;
    expect_outcome(
        as_token(&app, &token, Method::GET, "_history", None).await,
        403,
        "forbidden",
    )
    .await;
    // writing needs a write scope, and the result must stay in the compartment
    let writer = token_for(
        &app.data_dir,
        "patient/Observation.cruds",
        Some("p-a"),
        None,
    );
    let foreign = json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p-b"}});
    expect_outcome(
        as_token(&app, &writer, Method::POST, "Observation", Some(foreign)).await,
        403,
        "forbidden",
    )
    .await;
    let own = json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p-a"}});
    assert_eq!(
        as_token(&app, &writer, Method::POST, "Observation", Some(own))
            .await
            .status()
            .as_u16(),
        201
    );
    let steal = json!({"resourceType":"Observation","id":"theirs","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p-a"}});
    expect_outcome(
        as_token(
            &app,
            &writer,
            Method::PUT,
            "Observation/theirs",
            Some(steal),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        as_token(&app, &writer, Method::DELETE, "Observation/theirs", None)
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        app.get("Observation/theirs").await.status().as_u16(),
        200,
        "the other patient's resource is untouched"
    );
    // a patient/ scope without a patient in the token grants nothing
    let no_context = token_for(&app.data_dir, "patient/Observation.rs", None, None);
    expect_outcome(
        as_token(&app, &no_context, Method::GET, "Observation/mine", None).await,
        403,
        "forbidden",
    )
    .await;
}

async fn query_constrained_scopes(app: TestApp) {
    for (id, category) in [("sdoh", "sdoh"), ("lab", "laboratory")] {
        app.put(&format!("Observation/{id}"), &json!({"resourceType":"Observation","id":id,"status":"final","code":{"text":"x"},
            "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":category}]}]})).await;
    }
    let token = token_for(
        &app.data_dir,
        "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|sdoh",
        None,
        None,
    );
    assert_eq!(
        as_token(&app, &token, Method::GET, "Observation/sdoh", None)
            .await
            .status()
            .as_u16(),
        200
    );
    expect_outcome(
        as_token(&app, &token, Method::GET, "Observation/lab", None).await,
        404,
        "not-found",
    )
    .await;
    let found = body(as_token(&app, &token, Method::GET, "Observation", None).await).await;
    let ids: Vec<&str> = found["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, vec!["sdoh"]);
}

async fn backend_services_token_flow(app: TestApp) {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P384_SHA384_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap_or_else(|_| panic!("key"));
    let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES384)
        .unwrap_or_else(|err| panic!("{err}"));
    jwk.common.key_id = Some("ehr-key-1".into());
    let jwks = json!({"keys": [jwk]}).to_string();
    let store =
        pivot_fhir::store::Store::open(&app.database_url, 1).unwrap_or_else(|err| panic!("{err}"));
    let client = pivot_fhir::store::clients::Client {
        client_id: "ehr-vendor".into(),
        jwks,
        scope: "system/Patient.rs system/Observation.cruds".into(),
        fhir_user: None,
        created_at: 0,
    };
    store
        .blocking(|conn| pivot_fhir::store::clients::save(conn, &client))
        .unwrap_or_else(|err| panic!("{err}"));
    let token_url = format!("{}/auth/token", app.root);
    let assertion = |aud: &str, jti: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some("ehr-key-1".into());
        let now = chrono::Utc::now().timestamp();
        let claims =
            json!({"iss":"ehr-vendor","sub":"ehr-vendor","aud":aud,"exp":now + 240,"jti":jti});
        jsonwebtoken::encode(&header, &claims, &key).unwrap_or_default()
    };
    let request = |assertion: String, scope: &str| {
        let form = [
            ("grant_type", "client_credentials".to_string()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion", assertion),
            ("scope", scope.to_string()),
        ];
        send(reqwest::Client::new().post(&token_url).form(&form))
    };
    let granted = request(
        assertion(&token_url, "a-1"),
        "system/Patient.rs system/Organization.rs",
    )
    .await;
    assert_eq!(granted.status().as_u16(), 200);
    let granted = body(granted).await;
    assert_eq!(
        granted["scope"], "system/Patient.rs",
        "only registered scopes are granted"
    );
    assert_eq!(granted["token_type"], "bearer");
    let token = granted["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        as_token(&app, &token, Method::GET, "Patient", None)
            .await
            .status()
            .as_u16(),
        200
    );
    expect_outcome(
        as_token(&app, &token, Method::GET, "Organization", None).await,
        403,
        "forbidden",
    )
    .await;
    // replayed, wrong audience, unregistered scope, unknown client
    assert_eq!(
        request(assertion(&token_url, "a-1"), "system/Patient.rs")
            .await
            .status()
            .as_u16(),
        401,
        "replay"
    );
    assert_eq!(
        request(
            assertion("https://elsewhere/token", "a-2"),
            "system/Patient.rs"
        )
        .await
        .status()
        .as_u16(),
        401
    );
    let refused = request(assertion(&token_url, "a-3"), "system/Organization.rs").await;
    assert_eq!(refused.status().as_u16(), 400);
    assert_eq!(body(refused).await["error"], "invalid_scope");
    assert_eq!(
        request("not.a.jwt".into(), "system/Patient.rs")
            .await
            .status()
            .as_u16(),
        401
    );
}

fn sign_hs256(secret: &[u8], header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let header_part = URL_SAFE_NO_PAD.encode(header.to_string());
    let claims_part = URL_SAFE_NO_PAD.encode(claims.to_string());
    let message = format!("{header_part}.{claims_part}");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .unwrap_or_default();
    format!("{message}.{signature}")
}

async fn hostile_tokens_are_refused(app: TestApp) {
    app.put("Patient/p", &json!({"resourceType":"Patient","id":"p"}))
        .await;
    let good = token_for(&app.data_dir, "system/*.cruds", None, None);
    assert_eq!(
        as_token(&app, &good, Method::GET, "Patient/p", None)
            .await
            .status()
            .as_u16(),
        200
    );
    let parts: Vec<&str> = good.split('.').collect();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap_or_default())
            .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let with = |changes: serde_json::Value| {
        let mut c = claims.clone();
        if let (Some(map), Some(changes)) = (c.as_object_mut(), changes.as_object()) {
            for (k, v) in changes {
                map.insert(k.clone(), v.clone());
            }
        }
        c
    };
    let key =
        pivot_fhir::auth::keys::load_or_create(&app.data_dir).unwrap_or_else(|err| panic!("{err}"));
    let sign = |c: &serde_json::Value, kid: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = kid.map(str::to_string).or(Some(key.kid.clone()));
        jsonwebtoken::encode(&header, c, &key.encoding).unwrap_or_default()
    };
    let public_key = serde_json::to_string(&key.jwk).unwrap_or_default();
    let mut hostile = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                parts[1]
            ),
        ),
        (
            "HS256 with the public key",
            sign_hs256(
                public_key.as_bytes(),
                &json!({"alg":"HS256","typ":"JWT","kid":key.kid}),
                &claims,
            ),
        ),
        (
            "expired",
            sign(
                &with(json!({"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200})),
                None,
            ),
        ),
        (
            "not yet valid",
            sign(&with(json!({"nbf": now + 3600})), None),
        ),
        (
            "wrong issuer",
            sign(&with(json!({"iss": "https://evil.example"})), None),
        ),
        (
            "wrong audience",
            sign(&with(json!({"aud": "someone-else"})), None),
        ),
        ("unknown kid", sign(&claims, Some("no-such-key"))),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD
                    .encode(with(json!({"scope":"system/*.cruds","sub":"mallory"})).to_string()),
                parts[2]
            ),
        ),
        ("garbage", "not-a-jwt".to_string()),
        ("empty", String::new()),
    ];
    // signed by another key of the same kind
    let other_dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    hostile.push((
        "another server's key",
        token_for(other_dir.path(), "system/*.cruds", None, None),
    ));
    for (name, token) in hostile {
        let response = as_token(&app, &token, Method::GET, "Patient/p", None).await;
        assert_eq!(response.status().as_u16(), 401, "{name}");
    }
    let wrong_scheme = send(
        reqwest::Client::new()
            .get(format!("{}/Patient/p", app.base))
            .header("Authorization", format!("Basic {good}")),
    )
    .await;
    assert_eq!(wrong_scheme.status().as_u16(), 401);
}

async fn bundles_and_operations_respect_scopes(app: TestApp) {
    let token = token_for(&app.data_dir, "system/Patient.cruds", None, None);
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"fullUrl":"urn:uuid:0d8c6f39-3a7f-4a4b-a83a-5f4e0e0e0e01","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
        {"resource":{"resourceType":"Organization","name":"x"},"request":{"method":"POST","url":"Organization"}}]});
    let response = as_token(&app, &token, Method::POST, "", Some(bundle)).await;
    expect_outcome(response, 403, "forbidden").await;
    let total = body(app.get("Patient?_total=accurate").await).await["total"].as_i64();
    assert_eq!(total, Some(0), "the transaction kept nothing");
    expect_outcome(
        as_token(&app, &token, Method::POST, "$reindex", None).await,
        403,
        "forbidden",
    )
    .await;
}

mod roles {
    use reqwest::Method;
    use serde_json::json;

    use super::as_token;
    use crate::backend_tests;
    use crate::helpers::{TestApp, body, expect_outcome, token_for};

    backend_tests!(
        a_cbo_reaches_its_referrals_only,
        a_pivot_entity_reaches_its_attributed_patients
    );

    const ORG_TYPE: &str = "http://example.org/fhir/pivot/CodeSystem/pivot-organization-type";
    const ATTRIBUTED: &str =
        "http://example.org/fhir/pivot/StructureDefinition/pivot-attributed-entity";

    fn organization(id: &str, kind: &str) -> serde_json::Value {
        json!({"resourceType":"Organization","id":id,"name":id,"type":[{"coding":[{"system":ORG_TYPE,"code":kind}]}]})
    }

    async fn a_cbo_reaches_its_referrals_only(app: TestApp) {
        app.put("Organization/bank", &organization("bank", "cbo"))
            .await;
        app.put("Organization/housing", &organization("housing", "cbo"))
            .await;
        for (task, patient, owner) in [("t-bank", "p-1", "bank"), ("t-housing", "p-2", "housing")] {
            app.put(
                &format!("Patient/{patient}"),
                &json!({"resourceType":"Patient","id":patient}),
            )
            .await;
            app.put(&format!("ServiceRequest/sr-{task}"), &json!({"resourceType":"ServiceRequest","id":format!("sr-{task}"),"status":"active","intent":"order","subject":{"reference":format!("Patient/{patient}")}})).await;
            app.put(&format!("Task/{task}"), &json!({"resourceType":"Task","id":task,"status":"requested","intent":"order","priority":"routine",
                "focus":{"reference":format!("ServiceRequest/sr-{task}")},"for":{"reference":format!("Patient/{patient}")},"owner":{"reference":format!("Organization/{owner}")}})).await;
        }
        let cbo = token_for(
            &app.data_dir,
            "user/*.cruds",
            None,
            Some("Organization/bank"),
        );
        let tasks = body(as_token(&app, &cbo, Method::GET, "Task", None).await).await;
        let ids: Vec<&str> = tasks["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|x| x["resource"]["id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(ids, vec!["t-bank"], "its inbox");
        expect_outcome(
            as_token(&app, &cbo, Method::GET, "Task/t-housing", None).await,
            404,
            "not-found",
        )
        .await;
        assert_eq!(
            as_token(&app, &cbo, Method::GET, "Patient/p-1", None)
                .await
                .status()
                .as_u16(),
            200
        );
        expect_outcome(
            as_token(&app, &cbo, Method::GET, "Patient/p-2", None).await,
            404,
            "not-found",
        )
        .await;
        assert_eq!(
            as_token(&app, &cbo, Method::GET, "ServiceRequest/sr-t-bank", None)
                .await
                .status()
                .as_u16(),
            200
        );
        expect_outcome(
            as_token(&app, &cbo, Method::GET, "ServiceRequest/sr-t-housing", None).await,
            404,
            "not-found",
        )
        .await;
        let observations = body(as_token(&app, &cbo, Method::GET, "Observation", None).await).await;
        assert!(
            observations.get("entry").is_none(),
            "types the role does not list are out of reach"
        );
        // the performer may move its Task along, but not change what it was asked to do
        let accepted = json!([{"op":"replace","path":"/status","value":"accepted"},{"op":"add","path":"/businessStatus","value":{"text":"received"}}]);
        let response = crate::helpers::send(
            reqwest::Client::new()
                .patch(format!("{}/Task/t-bank", app.base))
                .header("Authorization", format!("Bearer {cbo}"))
                .header("Content-Type", "application/json-patch+json")
                .body(accepted.to_string()),
        )
        .await;
        assert_eq!(response.status().as_u16(), 200);
        let escalate = json!([{"op":"replace","path":"/priority","value":"stat"}]);
        let response = crate::helpers::send(
            reqwest::Client::new()
                .patch(format!("{}/Task/t-bank", app.base))
                .header("Authorization", format!("Bearer {cbo}"))
                .header("Content-Type", "application/json-patch+json")
                .body(escalate.to_string()),
        )
        .await;
        expect_outcome(response, 403, "forbidden").await;
        assert_eq!(
            body(app.get("Task/t-bank").await).await["priority"],
            "routine"
        );
    }

    async fn a_pivot_entity_reaches_its_attributed_patients(app: TestApp) {
        app.put("Organization/pe-3", &organization("pe-3", "pivot-entity"))
            .await;
        for (patient, entity) in [
            ("in-region", "Organization/pe-3"),
            ("elsewhere", "Organization/pe-5"),
        ] {
            app.put(&format!("Patient/{patient}"), &json!({"resourceType":"Patient","id":patient,"extension":[{"url":ATTRIBUTED,"valueReference":{"reference":entity}}]})).await;
            app.put(&format!("Observation/o-{patient}"), &json!({"resourceType":"Observation","id":format!("o-{patient}"),"status":"final","code":{"text":"x"},"subject":{"reference":format!("Patient/{patient}")}})).await;
        }
        let entity = token_for(
            &app.data_dir,
            "system/*.rs",
            None,
            Some("Organization/pe-3"),
        );
        let patients = body(as_token(&app, &entity, Method::GET, "Patient", None).await).await;
        let ids: Vec<&str> = patients["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|x| x["resource"]["id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(ids, vec!["in-region"]);
        assert_eq!(
            as_token(&app, &entity, Method::GET, "Observation/o-in-region", None)
                .await
                .status()
                .as_u16(),
            200
        );
        expect_outcome(
            as_token(&app, &entity, Method::GET, "Observation/o-elsewhere", None).await,
            404,
            "not-found",
        )
        .await;
        assert_eq!(
            as_token(&app, &entity, Method::GET, "Organization/pe-3", None)
                .await
                .status()
                .as_u16(),
            200,
            "reference data stays readable"
        );
    }
}
