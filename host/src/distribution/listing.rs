//! Listings: tags of a repository, the catalog of repositories, and the
//! referrers of a manifest. Tags and catalog paginate with `n` / `last` and
//! a `Link` header, as the spec describes.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{header_value, query_get, query_pairs};
use crate::oci::{Digest, RepoName, media};
use crate::storage::Storage;

/// Upper bound on one page, whatever `n` asks for, so a listing can never
/// build an unbounded response.
const MAX_PAGE: usize = 10_000;

struct Page {
    n: Option<usize>,
    last: Option<String>,
}

fn page(query: Option<&str>) -> Result<Page, ApiError> {
    let q = query_pairs(query);
    let n = match query_get(&q, "n") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::unsupported(
                StatusCode::BAD_REQUEST,
                format!("pagination parameter n=`{v}` is not a number"),
            )
        })?),
    };
    Ok(Page {
        n,
        last: query_get(&q, "last").map(str::to_string),
    })
}

/// Applies `last`/`n` to a sorted list; returns the page and whether more follow.
fn paginate(all: Vec<String>, p: &Page) -> (Vec<String>, bool) {
    let start = match &p.last {
        Some(last) => all.partition_point(|x| x.as_str() <= last.as_str()),
        None => 0,
    };
    let limit = p.n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let rest = all.len() - start;
    let items: Vec<String> = all.into_iter().skip(start).take(limit).collect();
    (items, rest > limit)
}

fn with_link(
    mut resp: Response,
    more: bool,
    base: &str,
    n: usize,
    last: Option<&String>,
) -> Response {
    if more && let Some(last) = last {
        let query = serde_urlencoded::to_string([("n", n.to_string()), ("last", last.clone())])
            .unwrap_or_default();
        resp.headers_mut().insert(
            header::LINK,
            header_value(&format!("<{base}?{query}>; rel=\"next\"")),
        );
    }
    resp
}

pub async fn tags(
    s: &dyn Storage,
    repo: &RepoName,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let p = page(query)?;
    let Some(all) = s.tags(repo).await? else {
        return Err(crate::storage::StorageError::NameUnknown.into());
    };
    let (tags, more) = paginate(all, &p);
    let resp = axum::Json(serde_json::json!({ "name": repo, "tags": tags })).into_response();
    let n = p.n.unwrap_or(MAX_PAGE);
    Ok(with_link(
        resp,
        more,
        &format!("/v2/{repo}/tags/list"),
        n,
        tags.last(),
    ))
}

pub async fn catalog(
    s: &dyn Storage,
    access: &super::Access,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let p = page(query)?;
    // Only what the caller may read: the catalog must not leak names.
    let all: Vec<String> = s
        .repositories()
        .await?
        .into_iter()
        .filter(|r| access.can_read(r))
        .map(|r| r.to_string())
        .collect();
    let (repos, more) = paginate(all, &p);
    let resp = axum::Json(serde_json::json!({ "repositories": repos })).into_response();
    let n = p.n.unwrap_or(MAX_PAGE);
    Ok(with_link(resp, more, "/v2/_catalog", n, repos.last()))
}

pub async fn referrers(
    s: &dyn Storage,
    repo: &RepoName,
    subject: &Digest,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let q = query_pairs(query);
    let filter = query_get(&q, "artifactType");
    let mut manifests = s.referrers(repo, subject).await?;
    if let Some(t) = filter {
        manifests.retain(|d| d.get("artifactType").and_then(|v| v.as_str()) == Some(t));
    }
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header_value(media::OCI_INDEX));
    if filter.is_some() {
        resp.headers_mut()
            .insert("oci-filters-applied", header_value("artifactType"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pagination_follows_last_and_n() {
        let all = names(&["a", "b", "c", "d"]);
        let (p, more) = paginate(
            all.clone(),
            &Page {
                n: Some(2),
                last: None,
            },
        );
        assert_eq!((p, more), (names(&["a", "b"]), true));
        let (p, more) = paginate(
            all.clone(),
            &Page {
                n: Some(2),
                last: Some("b".into()),
            },
        );
        assert_eq!((p, more), (names(&["c", "d"]), false));
        let (p, more) = paginate(
            all,
            &Page {
                n: Some(0),
                last: None,
            },
        );
        assert_eq!((p, more), (vec![], true));
    }
}
