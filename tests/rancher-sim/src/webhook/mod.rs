//! Rancher's admission webhook, served over HTTPS and registered with the local API
//! server (docs/rancher.md: Imported clusters, Projects and role bindings). AdmissionReview v1 JSON is read and written by hand.

pub mod cluster;
pub mod crtb;
pub mod resolver;
pub mod rules;

use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::faults::{Counters, Fault, FaultPoint};
use crate::server::{Body, play_fault, respond};
use crate::state::Shared;

/// A webhook's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    /// Allow with a JSON patch.
    Patch(Vec<Value>),
    /// Deny with HTTP-like code and message.
    Deny(u16, String),
}

/// The parts of an AdmissionRequest the hooks use.
pub struct Req<'a> {
    pub operation: &'a str,
    pub namespace: &'a str,
    pub username: &'a str,
    pub groups: Vec<String>,
    pub object: &'a Value,
    pub old_object: &'a Value,
}

impl<'a> Req<'a> {
    pub fn from_json(r: &'a Value) -> Self {
        Req {
            operation: r["operation"].as_str().unwrap_or_default(),
            namespace: r["namespace"].as_str().unwrap_or_default(),
            username: r["userInfo"]["username"].as_str().unwrap_or_default(),
            groups: r["userInfo"]["groups"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            object: &r["object"],
            old_object: &r["oldObject"],
        }
    }
}

/// The AdmissionReview response for `uid`.
pub fn review_response(uid: &str, verdict: &Verdict) -> Value {
    let response = match verdict {
        Verdict::Allow => json!({"uid": uid, "allowed": true}),
        Verdict::Patch(ops) => json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD.encode(Value::Array(ops.clone()).to_string())}),
        Verdict::Deny(code, msg) => json!({"uid": uid, "allowed": false,
            "status": {"code": code, "message": msg, "status": "Failure",
                       "reason": if *code == 409 { "AlreadyExists" } else if *code == 403 { "Forbidden" } else { "BadRequest" }}}),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

pub async fn handle(shared: &Shared, hook: &str, body: &Bytes) -> Response<Body> {
    Counters::inc(&shared.counters.webhook_calls);
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return respond(StatusCode::BAD_REQUEST, "text/plain", "bad AdmissionReview");
    };
    let request = &review["request"];
    let uid = request["uid"].as_str().unwrap_or_default();
    let point = if hook.contains("clusters.provisioning") {
        FaultPoint::WebhookProvisioningCluster
    } else {
        FaultPoint::WebhookCrtb
    };
    let verdict = match shared.faults.take(point) {
        Some(Fault::Status(code)) => {
            Counters::inc(&shared.counters.faults_fired);
            Verdict::Deny(code, "injected fault".into())
        }
        Some(f @ Fault::Timeout) => return play_fault(shared, f).await,
        None => {
            let req = Req::from_json(request);
            match hook {
                "mutation/clusters.provisioning.cattle.io" => cluster::mutate(&req),
                "validation/clusters.provisioning.cattle.io" => cluster::validate(&req),
                "mutation/clusterroletemplatebindings.management.cattle.io" => {
                    crtb::mutate(shared, &req)
                }
                "validation/clusterroletemplatebindings.management.cattle.io" => {
                    crtb::validate_crtb(shared, &req).await
                }
                "validation/projectroletemplatebindings.management.cattle.io" => {
                    crtb::validate_prtb(&req)
                }
                _ => Verdict::Allow,
            }
        }
    };
    if matches!(verdict, Verdict::Deny(..)) {
        Counters::inc(&shared.counters.webhook_denials);
    }
    respond(
        StatusCode::OK,
        "application/json",
        review_response(uid, &verdict).to_string(),
    )
}

/// `/` and `~` escaped for a JSON pointer.
pub fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}
