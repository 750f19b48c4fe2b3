//! The token endpoint, `<public_url>/auth/token`: the Docker registry token
//! flow (`GET ?service=&scope=`) and its OAuth2 form (`POST`,
//! `grant_type=password`, or `refresh_token` with an identity token).
//!
//! Credentials are Basic: an htpasswd user, or any username with an OIDC
//! token as the password; none at all is an anonymous request. The answer
//! is a token minted by Gantry whose scope is narrowed to what access
//! control grants, and whose lifetime never exceeds the OIDC token's.
//!
//! A Gantry token is accepted as the credential too (Bearer, or as the Basic
//! password), so a client can trade it for a token of another scope. Such a
//! token is never wider than the one presented: its scope is the
//! intersection of what was asked, what access control grants now and the
//! presented token's own scope; it never outlives the presented token.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::credentials;
use super::error::{ApiError, ErrorCode};
use crate::auth::token::{AccessEntry, scope_actions, scope_words};
use crate::auth::{Auth, AuthFailure, Caller};
use crate::oci::RepoName;

/// Largest form body accepted on POST.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What an OAuth2 form `POST` authenticates with.
enum FormCredentials {
    /// `grant_type=password`: an htpasswd user, or any name with a token.
    Password(String, String),
    /// `grant_type=refresh_token`: an identity token.
    Token(String),
}

fn unauthorized(auth: &Auth, failure: &AuthFailure) -> Response {
    let mut e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        failure.client_message(),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{}\"", auth.realm)) {
        e = e.with_header(header::WWW_AUTHENTICATE, v);
    }
    e.internal = Some(failure.to_string());
    e.into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// `GET|POST /auth/token`.
pub async fn token(auth: Arc<Auth>, req: Request) -> Response {
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let mut params: Vec<(String, String)> = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let mut form_credentials = None;
    if method == Method::POST {
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "form body too large or unreadable",
                );
            }
        };
        let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&bytes) {
            Ok(f) => f,
            Err(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "body is not a form",
                );
            }
        };
        let get = |k: &str| {
            form.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        match get("grant_type").as_deref() {
            Some("password") => {
                let (Some(user), Some(pass)) = (get("username"), get("password")) else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "username and password are required",
                    );
                };
                form_credentials = Some(FormCredentials::Password(user, pass));
            }
            // An identity token (`oras login --identity-token`, a docker
            // credential helper's): an OIDC token or a Gantry token, taken
            // as a Bearer would be.
            Some("refresh_token") => {
                let Some(token) = get("refresh_token") else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "refresh_token is required",
                    );
                };
                form_credentials = Some(FormCredentials::Token(token));
            }
            Some(other) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    &format!(
                        "grant_type `{other}` is not supported; use password or refresh_token"
                    ),
                );
            }
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "grant_type is required",
                );
            }
        }
        params.extend(form);
    } else if method != Method::GET {
        return ApiError::unsupported(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST")
            .into_response();
    }
    if let Some((_, service)) = params.iter().find(|(k, _)| k == "service")
        && service != &auth.service
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("unknown service `{service}`"),
        );
    }

    let authenticated = match form_credentials {
        Some(FormCredentials::Password(user, pass)) => {
            use base64::Engine as _;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            auth.basic(&encoded).await
        }
        Some(FormCredentials::Token(token)) => auth
            .bearer(&token)
            .await
            .map(|(caller, exp)| (caller, Some(exp))),
        // A Bearer here is an OIDC token, or a Gantry token to trade in.
        None => auth.authenticate(credentials(&parts.headers)).await,
    };
    let (caller, not_after) = match authenticated {
        Ok(ok) => ok,
        Err(failure) => return unauthorized(&auth, &failure),
    };

    let mut access = Vec::new();
    for (_, scope) in params.iter().filter(|(k, _)| k == "scope") {
        // A scope parameter may hold several space-separated scopes.
        for one in scope.split(' ').filter(|s| !s.is_empty()) {
            if let Some(entry) = grant(&auth, &caller, one) {
                access.push(entry);
            }
        }
    }
    match auth.mint(&caller, access, not_after) {
        Ok((token, iat, exp)) => axum::Json(serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": exp.saturating_sub(iat),
            "issued_at": rfc3339(iat),
        }))
        .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Narrows one requested scope (`repository:NAME:pull,push`) to what the
/// caller may do; `None` when nothing of it is granted or it is malformed.
fn grant(auth: &Auth, caller: &Caller, scope: &str) -> Option<AccessEntry> {
    let (rest, actions) = scope.rsplit_once(':')?;
    let (kind, name) = rest.split_once(':')?;
    match kind {
        "repository" => {
            let repo: RepoName = name.parse().ok()?;
            let requested = actions.split(',').map(scope_actions).fold(
                Default::default(),
                |a: crate::auth::access::ActionSet, b| a.union(b),
            );
            // `allowed` caps access control by the scope of a presented
            // Gantry token: trading a token in never widens it.
            let granted = requested.intersect(auth.allowed(caller, &repo));
            let words = scope_words(granted);
            (!words.is_empty()).then(|| AccessEntry {
                kind: kind.into(),
                name: name.into(),
                actions: words,
            })
        }
        "registry"
            if name == "catalog"
                && caller.identity.is_some()
                && caller.token.as_ref().is_none_or(|t| t.grants_catalog()) =>
        {
            Some(AccessEntry {
                kind: kind.into(),
                name: name.into(),
                actions: vec!["*".into()],
            })
        }
        _ => None,
    }
}

/// Formats unix seconds as an RFC 3339 UTC timestamp.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
