//! `/k8s/clusters/<id>/<path>`: Rancher's cluster proxy. Authenticates
//! `Authorization: Bearer <name>:<secret>` against management `Token` objects (unknown,
//! wrong secret, expired, disabled or scoped to another cluster → 401), then forwards the
//! request to the API server connected for `<id>` with the admin certificate and
//! `Impersonate-User: <token.userId>` + `Impersonate-Group: system:authenticated`, so the
//! downstream's RBAC applies. Responses (watches too) are streamed back. 503 when the
//! cluster is known but not connected.

use futures::TryStreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use serde_json::Value;

use super::{Body, BoxError, play_fault, status_error};
use crate::faults::{Counters, FaultPoint};
use crate::kinds;
use crate::state::{Shared, get_opt};

/// Largest request body forwarded (responses are streamed, unbounded).
const MAX_REQUEST_BODY: usize = 16 << 20;

/// Why a Rancher token is refused, or the user it authenticates.
pub fn check_token(
    tok: &DynamicObject,
    secret: &str,
    cluster: &str,
    now: Timestamp,
) -> Result<String, &'static str> {
    let stored = tok
        .data
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if stored.is_empty()
        || stored.len() != secret.len()
        || !constant_eq(stored.as_bytes(), secret.as_bytes())
    {
        return Err("invalid token");
    }
    if tok.data.get("enabled").and_then(Value::as_bool) == Some(false) {
        return Err("token disabled");
    }
    if let Some(exp) = tok
        .data
        .get("expiresAt")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && exp.parse::<Timestamp>().map_or(true, |t| t <= now)
    {
        return Err("token expired");
    }
    let ttl_ms = tok.data.get("ttl").and_then(Value::as_i64).unwrap_or(0);
    if ttl_ms > 0
        && let Some(created) = &tok.metadata.creation_timestamp
        && created.0.as_millisecond() + ttl_ms <= now.as_millisecond()
    {
        return Err("token expired");
    }
    let scope = tok
        .data
        .get("clusterName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !scope.is_empty() && scope != cluster {
        return Err("token not valid for this cluster");
    }
    tok.data
        .get("userId")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or("token has no user")
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn handle(shared: &Shared, req: Request<Incoming>, rest: &str) -> Response<Body> {
    Counters::inc(&shared.counters.proxy_requests);
    if let Some(f) = shared.faults.take(FaultPoint::Proxy) {
        return play_fault(shared, f).await;
    }
    let (cluster, path) = rest.split_once('/').unwrap_or((rest, ""));
    let unauthorized = || {
        Counters::inc(&shared.counters.proxy_unauthorized);
        status_error(401, "Unauthorized", "Unauthorized")
    };
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some((name, secret)) = bearer.and_then(|b| b.split_once(':')) else {
        return unauthorized();
    };
    let tok = match get_opt(&kinds::TOKEN.all(&shared.local), name).await {
        Ok(Some(t)) => t,
        Ok(None) => return unauthorized(),
        Err(_) => return status_error(500, "InternalError", "cannot read tokens"),
    };
    let user = match check_token(&tok, secret, cluster, Timestamp::now()) {
        Ok(u) => u,
        Err(_) => return unauthorized(),
    };
    let backend = if cluster == "local" {
        Some(shared.local_backend.clone())
    } else {
        shared
            .connection(cluster)
            .and_then(|c| shared.backend(c.backend))
    };
    let Some(backend) = backend else {
        return match get_opt(&kinds::MGMT_CLUSTER.all(&shared.local), cluster).await {
            Ok(Some(_)) => {
                status_error(503, "ServiceUnavailable", "cluster agent is not connected")
            }
            _ => status_error(404, "NotFound", "cluster not found"),
        };
    };
    let mut url = format!("{}/{}", backend.url, path);
    if let Some(q) = req.uri().query() {
        url.push('?');
        url.push_str(q);
    }
    let method = req.method().clone();
    let mut headers = http::HeaderMap::new();
    for h in [http::header::CONTENT_TYPE, http::header::ACCEPT] {
        if let Some(v) = req.headers().get(&h) {
            headers.insert(h, v.clone());
        }
    }
    let Ok(user_header) = http::HeaderValue::from_str(&user) else {
        return unauthorized();
    };
    headers.insert("Impersonate-User", user_header);
    headers.insert(
        "Impersonate-Group",
        http::HeaderValue::from_static("system:authenticated"),
    );
    let body = match http_body_util::Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return status_error(413, "RequestEntityTooLarge", "request body too large"),
    };
    let resp = match backend
        .http
        .request(method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return status_error(
                502,
                "BadGateway",
                &format!("cannot reach cluster: {}", e.without_url()),
            );
        }
    };
    let mut out = Response::builder()
        .status(StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY));
    if let Some(ct) = resp.headers().get(http::header::CONTENT_TYPE) {
        out = out.header(http::header::CONTENT_TYPE, ct.clone());
    }
    let stream = resp
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(|e| -> BoxError { Box::new(e) });
    out.body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| status_error(502, "BadGateway", "bad response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(extra: Value) -> DynamicObject {
        let mut v = serde_json::json!({"apiVersion": "management.cattle.io/v3", "kind": "Token",
            "metadata": {"name": "token-a", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "token": "sekret", "userId": "u-1"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn token_checks() {
        let now: Timestamp = "2020-01-01T00:00:10Z".parse().unwrap();
        assert_eq!(
            check_token(&token(serde_json::json!({})), "sekret", "c-m-1", now),
            Ok("u-1".into())
        );
        assert!(check_token(&token(serde_json::json!({})), "wrong!", "c-m-1", now).is_err());
        assert!(
            check_token(
                &token(serde_json::json!({"ttl": 5000})),
                "sekret",
                "c-m-1",
                now
            )
            .is_err()
        );
        assert!(
            check_token(
                &token(serde_json::json!({"ttl": 50000})),
                "sekret",
                "c-m-1",
                now
            )
            .is_ok()
        );
        assert!(
            check_token(
                &token(serde_json::json!({"expiresAt": "2020-01-01T00:00:05Z"})),
                "sekret",
                "c",
                now
            )
            .is_err()
        );
        assert!(
            check_token(
                &token(serde_json::json!({"clusterName": "c-m-2"})),
                "sekret",
                "c-m-1",
                now
            )
            .is_err()
        );
        assert!(
            check_token(
                &token(serde_json::json!({"enabled": false})),
                "sekret",
                "c-m-1",
                now
            )
            .is_err()
        );
    }
}
