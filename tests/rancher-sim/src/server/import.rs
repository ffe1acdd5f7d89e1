//! `GET /v3/import/<token>_<c-m-id>.yaml` (docs/rancher.md: Registration token and import manifest): 404 for an unknown
//! cluster; with the `{token}` Secret (newer Rancher) 400 for a token that matches no
//! token Secret of that cluster; older Rancher serves any well-formed token.

use http::{Method, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use kube::api::Api;

use super::{Body, play_fault, respond, status_error};
use crate::controllers::management::TOKEN_SECRET;
use crate::faults::{Counters, FaultPoint};
use crate::kinds;
use crate::manifest::{ManifestInput, render};
use crate::options::{AgentTlsMode, RancherVersion, TokenMode};
use crate::state::{Shared, get_opt};

/// Splits `<token>_<c-m-id>.yaml`.
pub fn parse_file(file: &str) -> Option<(&str, &str)> {
    let stem = file.strip_suffix(".yaml")?;
    let (token, cid) = stem.rsplit_once('_')?;
    (!token.is_empty() && !cid.is_empty()).then_some((token, cid))
}

/// Rancher's tokens are lowercase alphanumerics.
pub fn well_formed(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

pub async fn handle(shared: &Shared, method: &Method, file: &str) -> Response<Body> {
    if let Some(f) = shared.faults.take(FaultPoint::ImportEndpoint) {
        Counters::inc(&shared.counters.manifests_refused);
        return play_fault(shared, f).await;
    }
    let refuse = |code: u16, msg: &str| {
        Counters::inc(&shared.counters.manifests_refused);
        status_error(code, "Refused", msg)
    };
    if method != Method::GET {
        return refuse(405, "method not allowed");
    }
    let Some((token, cid)) = parse_file(file) else {
        return refuse(404, "not found");
    };
    match get_opt(&kinds::MGMT_CLUSTER.all(&shared.local), cid).await {
        Ok(Some(_)) => {}
        Ok(None) => return refuse(404, "cluster not found"),
        Err(_) => return refuse(500, "cannot read cluster"),
    }
    if !well_formed(token) {
        return refuse(400, "invalid token");
    }
    if shared.opts.effective_token_mode() == TokenMode::SecretPlaceholder {
        let secrets: Api<CoreSecret> = Api::namespaced(shared.local.clone(), cid);
        let current = match secrets.get_opt(TOKEN_SECRET).await {
            Ok(s) => s.and_then(|s| s.data?.get("token").map(|b| b.0.clone())),
            Err(_) => return refuse(500, "cannot read token"),
        };
        if current.as_deref() != Some(token.as_bytes()) {
            return refuse(400, "invalid token");
        }
    }
    let version = match shared.opts.version {
        RancherVersion::V2_13 => "v2.13.8",
        RancherVersion::V2_14 => "v2.14.4",
        RancherVersion::V2_15 => "v2.15.0",
    };
    let image = format!("rancher/rancher-agent:{version}");
    let input = ManifestInput {
        server_url: &shared.server_url,
        token,
        cacerts: &shared.ca_pem,
        strict: shared.opts.agent_tls_mode == AgentTlsMode::Strict,
        agent_image: &image,
    };
    match render(&input) {
        Ok(yaml) => {
            Counters::inc(&shared.counters.manifests_served);
            respond(StatusCode::OK, "application/yaml", yaml)
        }
        Err(_) => refuse(500, "cannot render manifest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_import_file_names() {
        assert_eq!(
            parse_file("abc_c-m-12345678.yaml"),
            Some(("abc", "c-m-12345678"))
        );
        assert_eq!(parse_file("{token}_c-m-1.yaml"), Some(("{token}", "c-m-1")));
        assert_eq!(parse_file("abc.yaml"), None);
        assert_eq!(parse_file("abc_c-m-1.yml"), None);
        assert!(well_formed("bcd245"));
        assert!(!well_formed("{token}"));
    }
}
