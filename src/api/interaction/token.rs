//! The OAuth 2.0 token endpoint, `POST /auth/token` (SMART Backend Services).

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::api::AppState;
use crate::auth::backend_services::{OAuthError, exchange};

pub async fn token(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let form: HashMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .unwrap_or_default()
            .into_iter()
            .collect();
    let token_url = format!(
        "{}/auth/token",
        state.fhir_base(&req).trim_end_matches("/fhir")
    );
    let auth = state.auth.clone();
    let result = state
        .store
        .write(move |conn| {
            Ok::<_, crate::error::FhirError>(exchange(conn, &auth, &token_url, &form))
        })
        .await
        .unwrap_or_else(|_| {
            Err(OAuthError {
                error: "temporarily_unavailable",
                description: "try again".into(),
            })
        });
    match result {
        Ok(granted) => {
            tracing::info!(interaction = "token", "access token issued");
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-store"))
                .insert_header(("Pragma", "no-cache"))
                .json(json!({ "access_token": granted.access_token, "token_type": "bearer", "expires_in": granted.expires_in, "scope": granted.scope }))
        }
        Err(err) => {
            tracing::info!(
                interaction = "token",
                error = err.error,
                "token request refused"
            );
            let status = actix_web::http::StatusCode::from_u16(err.status())
                .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
            HttpResponse::build(status)
                .insert_header(("Cache-Control", "no-store"))
                .json(json!({ "error": err.error, "error_description": err.description }))
        }
    }
}
