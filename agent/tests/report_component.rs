//! Component test, against a real kube-apiserver and an in-process fake hub over TLS, of
//! what the agent reports about each vCluster besides its identity: the Service's labels
//! as they are, the chart version from its `chart` label, the requested name or prefix
//! (vclink's annotations or the Go operator's `platform.vcluster.com/` spellings) and the
//! limits of its ResourceQuota in either layout (`vc-<name>`, `<name>-quota`). A quota
//! whose limits change is sent again as one Upsert; a status-only change sends nothing;
//! an invalid prefix excludes the vCluster with a reason naming the annotation, shown on
//! the Service.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ResourceQuota, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use vclink_agent::{ClusterTasks, spawn_cluster_tasks};
use vclink_proto::keys;
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::exclusion::Kind;
use vclink_proto::v1::link_server::Link;
use vclink_proto::v1::{AgentMessage, HubMessage, VCluster};

mod support;
use support::{create_namespace, eventually, job_settings, map, open_stream, serve_hub, service};

/// Records every agent message; keeps each stream open (holds its sender).
struct FakeHub {
    seen: mpsc::Sender<AgentMessage>,
    to_agent: tokio::sync::Mutex<Option<mpsc::Receiver<HubMessage>>>,
    open: std::sync::Mutex<Vec<mpsc::Sender<Result<HubMessage, Status>>>>,
}

#[tonic::async_trait]
impl Link for FakeHub {
    type AttachStream = ReceiverStream<Result<HubMessage, Status>>;

    async fn attach(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, stream) = open_stream(Duration::from_secs(5), &self.to_agent).await?;
        self.open.lock().expect("lock").push(tx);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if seen.send(m).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// The reported vClusters, as the hub was told: the snapshot, then every Upsert.
struct Reported {
    rx: mpsc::Receiver<AgentMessage>,
    now: BTreeMap<String, VCluster>,
}

impl Reported {
    /// Reads messages until the vCluster `name` satisfies `check`; returns every
    /// Upsert of it seen on the way (the last one satisfies `check`).
    async fn until(
        &mut self,
        name: &str,
        what: &str,
        check: impl Fn(&VCluster) -> bool,
    ) -> Vec<VCluster> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut upserts = Vec::new();
        loop {
            if let Some(v) = self.now.values().find(|v| v.name == name)
                && check(v)
            {
                return upserts;
            }
            let m = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for {what}; reported: {:#?}", self.now)
                })
                .expect("the stream stays open");
            match m.msg {
                Some(Msg::Snapshot(s)) => {
                    assert!(self.now.is_empty(), "one stream, one snapshot");
                    for v in s.vclusters {
                        self.now.insert(v.uid.clone(), v);
                    }
                }
                Some(Msg::Upsert(u)) => {
                    let v = u.vcluster.expect("an Upsert carries its vCluster");
                    if v.name == name {
                        upserts.push(v.clone());
                    }
                    self.now.insert(v.uid.clone(), v);
                }
                _ => {}
            }
        }
    }
}

async fn create(
    client: &Client,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) {
    let mut svc = service(name);
    let mut all = map(&[("app", "vcluster")]);
    all.extend(map(labels));
    svc.metadata.labels = Some(all);
    svc.metadata.annotations = Some(map(annotations));
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
}

fn quota(name: &str, cpu: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
        "spec": {"hard": {"limits.cpu": cpu, "requests.memory": "8Gi", "count/jobs.batch": "20"}}})
}

fn cpu(v: &VCluster) -> Option<&str> {
    v.quota.as_ref()?.hard.get("limits.cpu").map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_version_names_and_quota_are_reported_and_a_quota_change_is_sent_once() {
    vclink_agent::tls::install_default_provider();
    let cluster = vclink_envtest::Cluster::start("agent-report", Default::default())
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    create_namespace(
        &client,
        ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        },
    )
    .await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "team-a");
    let apply = PatchParams::apply("report-test").force();
    quotas
        .patch("vc-vc1", &apply, &Patch::Apply(quota("vc-vc1", "4")))
        .await
        .expect("quota vc-vc1");
    quotas
        .patch("old-quota", &apply, &Patch::Apply(quota("old-quota", "2")))
        .await
        .expect("quota old-quota");
    create(
        &client,
        "team-a",
        "vc1",
        &[
            ("chart", "vcluster-0.21.1"),
            ("vcluster.loft.sh/service", "true"),
            ("example.org/team", "blue"),
        ],
        &[(keys::ANNOTATION_CLUSTER_NAME_PREFIX, "edge")],
    )
    .await;
    create(
        &client,
        "team-a",
        "old",
        &[("chart", "vcluster-k8s-0.19.5")],
        &[],
    )
    .await;
    create(
        &client,
        "team-a",
        "op",
        &[],
        &[(keys::ANNOTATION_PLATFORM_CUSTOM_NAME, "their-name")],
    )
    .await;
    create(
        &client,
        "team-a",
        "bad",
        &[],
        &[(keys::ANNOTATION_PLATFORM_CUSTOM_NAME_PREFIX, "Not_A_Prefix")],
    )
    .await;

    let (seen_tx, seen) = mpsc::channel(256);
    let hub = serve_hub(FakeHub {
        seen: seen_tx,
        to_agent: tokio::sync::Mutex::new(None),
        open: Default::default(),
    })
    .await;
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let channels = spawn_cluster_tasks(
        &mut tasks,
        ClusterTasks {
            client: client.clone(),
            namespace_selector: None,
            jobs: job_settings(),
            kube_qps: 100.0,
            kube_burst: 50,
            instance: "test".into(),
        },
        &cancel,
    );
    tasks.spawn(vclink_agent::link::run(
        hub.cfg.clone(),
        channels,
        cancel.clone(),
    ));
    let mut hub = Reported {
        rx: seen,
        now: BTreeMap::new(),
    };

    // Labels as they are, version, prefix and the v0.20 quota; then the agent's own mark
    // (one more label, one more Upsert) so later Upserts are only quota changes.
    hub.until("vc1", "vc1 reported with its labels and quota", |v| {
        v.labels.get("example.org/team").map(String::as_str) == Some("blue")
            && v.labels.contains_key(keys::LABEL_TRACKED)
            && v.vcluster_version == "0.21.1"
            && v.requested_prefix == "edge"
            && v.exclusion.is_none()
            && v.quota
                .as_ref()
                .is_some_and(|q| q.name == "vc-vc1" && q.hard.len() == 3)
            && cpu(v) == Some("4")
    })
    .await;
    hub.until(
        "old",
        "the v0.19 vCluster with <name>-quota and its version",
        |v| v.vcluster_version == "0.19.5" && cpu(v) == Some("2"),
    )
    .await;
    hub.until(
        "op",
        "the operator's custom name as the requested name",
        |v| v.requested_name == "their-name" && v.exclusion.is_none(),
    )
    .await;
    let bad = hub
        .until("bad", "an invalid prefix reported as INVALID", |v| {
            v.exclusion
                .as_ref()
                .is_some_and(|x| x.kind() == Kind::Invalid)
        })
        .await;
    let bad_now = hub
        .now
        .values()
        .find(|v| v.name == "bad")
        .cloned()
        .expect("bad");
    let reason = bad_now
        .exclusion
        .as_ref()
        .map(|x| x.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.contains(keys::ANNOTATION_PLATFORM_CUSTOM_NAME_PREFIX),
        "{reason} {bad:?}"
    );
    assert_eq!(
        bad_now.requested_prefix, "",
        "blanked: the message still validates"
    );
    let svcs: Api<Service> = Api::namespaced(client.clone(), "team-a");
    eventually(60, "the reason on the Service", || {
        let svcs = svcs.clone();
        async move {
            let a = svcs.get("bad").await.ok()?.metadata.annotations?;
            a.get(keys::ANNOTATION_EXCLUDED_REASON)
                .is_some_and(|r| r.contains(keys::ANNOTATION_PLATFORM_CUSTOM_NAME_PREFIX))
                .then_some(())
        }
    })
    .await;
    hub.until("vc1", "vc1 marked", |v| {
        v.labels.contains_key(keys::LABEL_TRACKED)
    })
    .await;

    // The limits change: one Upsert with the new quota.
    quotas
        .patch("vc-vc1", &apply, &Patch::Apply(quota("vc-vc1", "8")))
        .await
        .expect("change quota");
    let sent = hub
        .until("vc1", "the new limit sent", |v| cpu(v) == Some("8"))
        .await;
    assert_eq!(sent.len(), 1, "one Upsert for one change: {sent:?}");

    // Only the status changes (what the quota controller writes at every pod): nothing
    // is sent. The same watch then delivers a limit change, so an Upsert caused by the
    // status would arrive before it.
    let status =
        serde_json::json!({"status": {"hard": {"limits.cpu": "8"}, "used": {"limits.cpu": "3"}}});
    quotas
        .patch_status("vc-vc1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    quotas
        .patch("vc-vc1", &apply, &Patch::Apply(quota("vc-vc1", "16")))
        .await
        .expect("change quota again");
    let sent = hub
        .until("vc1", "the second new limit sent", |v| cpu(v) == Some("16"))
        .await;
    assert_eq!(
        sent.iter()
            .map(|v| cpu(v).unwrap_or_default().to_string())
            .collect::<Vec<_>>(),
        ["16"],
        "nothing is sent for a status-only change"
    );

    // The quota goes away: reported without one.
    quotas
        .delete("vc-vc1", &Default::default())
        .await
        .expect("delete quota");
    hub.until("vc1", "vc1 without quota", |v| v.quota.is_none())
        .await;
    cancel.cancel();
}
