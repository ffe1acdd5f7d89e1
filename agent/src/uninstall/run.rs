//! The uninstaller task: takes the hub's `Forget`s (and, at start, the uninstalls a
//! previous run left unfinished), decides whether the vCluster is to be uninstalled
//! ([`super::choice`]), records its proof ([`super::note::Markers`]), announces it with
//! a Warning Event, removes the release's objects ([`super::select`]) and then the
//! release Secrets, and logs and announces what was removed and what was left. Every
//! failure ends in an Event; nothing here panics or stops the agent.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Preconditions, PropagationPolicy,
};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vclink_proto::keys;
use vclink_proto::v1::exclusion::Kind as ExclusionKind;

use super::note::{self, Markers, Pending};
use super::release::{self, secret_selector};
use super::select::{self, Candidate, Left};
use super::{Choice, Forgotten, UninstallSettings, choice, was_imported};
use crate::latest;
use crate::ratelimit::RateLimiter;
use crate::watch::CatalogRx;

/// Rounds of removal while deletions fail for reasons other than a refusal (the API
/// server unreachable, a timeout), and the pause between them.
const ROUNDS: u32 = 3;
const ROUND_PAUSE: Duration = Duration::from_secs(10);

/// Carries out uninstalls; see the module docs.
pub(crate) struct Uninstaller {
    client: Client,
    settings: UninstallSettings,
    catalog: CatalogRx,
    limiter: RateLimiter,
    instance: String,
    markers: Markers,
    /// Service UIDs handled by this process (a repeated `Forget` is not acted on twice).
    handled: HashSet<String>,
}

/// What one removal pass did.
#[derive(Default)]
struct Outcome {
    removed: Vec<String>,
    left: Vec<Left>,
    /// Deletions that failed for a reason worth another round.
    failed: Vec<String>,
}

impl Uninstaller {
    pub fn new(
        client: Client,
        settings: UninstallSettings,
        catalog: CatalogRx,
        limiter: RateLimiter,
        instance: String,
    ) -> Self {
        let markers = Markers::new(client.clone(), client.default_namespace().to_string());
        Self {
            client,
            settings,
            catalog,
            limiter,
            instance,
            markers,
            handled: HashSet::new(),
        }
    }

    /// Finishes what a previous run left, then handles `Forget`s until the queue closes
    /// or `cancel` fires.
    pub async fn run(mut self, mut rx: latest::Receiver<Forgotten>, cancel: CancellationToken) {
        if self.settings.allowed {
            match self.markers.pending().await {
                Ok(list) => {
                    for p in list {
                        info!(namespace = %p.namespace, name = %p.service, release = %p.release,
                            "resuming the uninstall of a vCluster a previous run of the agent began");
                        self.handled.insert(p.uid.clone());
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = self.uninstall(&p) => {}
                        }
                    }
                }
                Err(e) => warn!(error = %crate::error_line(&e),
                    "cannot list unfinished vCluster uninstalls; an uninstall interrupted by a restart stays unfinished"),
            }
        }
        loop {
            let op = tokio::select! {
                _ = cancel.cancelled() => return,
                op = rx.recv() => match op { Some(op) => op, None => return },
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.forgotten(op) => {}
            }
        }
    }

    /// The hub reported the vCluster's Rancher cluster deleted by a user in Rancher.
    async fn forgotten(&mut self, op: Forgotten) {
        let Forgotten { uid, state_before } = op;
        if self.handled.contains(&uid) {
            return;
        }
        let (namespace, name, kind) = {
            let c = self.catalog.borrow();
            let Some(f) = c.services.get(&uid) else {
                return;
            };
            let kind = c.vclusters.get(&uid).map(|v| v.exclusion_kind());
            (f.namespace.clone(), f.name.clone(), kind)
        };
        // The live Service: its labels and the operator's annotation are not in the
        // catalog, and a Service gone or replaced (another UID) is not uninstalled.
        let svc = match Api::<Service>::namespaced(self.client.clone(), &namespace)
            .get_opt(&name)
            .await
        {
            Ok(Some(s)) if s.metadata.uid.as_deref() == Some(uid.as_str()) => s,
            Ok(_) => return,
            Err(e) => {
                warn!(%namespace, %name, error = %crate::error_line(&e),
                    "cannot read the vCluster's Service to decide on uninstall-on-cluster-delete; not uninstalling");
                return;
            }
        };
        let annotations = svc.metadata.annotations.clone().unwrap_or_default();
        let Choice::Yes(asked_by) = choice(&annotations, self.settings.by_default) else {
            debug!(%namespace, %name, "the vCluster does not ask to be uninstalled with its Rancher cluster");
            return;
        };
        self.handled.insert(uid.clone());
        let release = svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("release"))
            .cloned()
            .unwrap_or_default();
        let p = Pending {
            uid,
            namespace,
            service: name,
            release,
            cluster: annotations
                .get(keys::ANNOTATION_RANCHER_CLUSTER)
                .cloned()
                .unwrap_or_else(|| "(unknown)".into()),
        };
        let who = format!("{}/{}", p.namespace, p.service);
        if !self.settings.allowed {
            warn!(vcluster = %who, asked_by, "uninstall-on-cluster-delete is set but uninstalling is not enabled for this agent; nothing removed");
            self.event(&p, true, "UninstallNotEnabled", &format!(
                "{asked_by} asks to uninstall this vCluster now that its Rancher cluster {} was deleted in Rancher, \
                 but uninstalling is not enabled for the vclink agent of this cluster, so nothing was removed. \
                 An administrator enables it with the agent chart value uninstall.enabled=true (flag --allow-uninstall); \
                 or uninstall it yourself with helm uninstall {} -n {}.", p.cluster, p.service, p.namespace)).await;
            return;
        }
        if matches!(
            kind,
            Some(ExclusionKind::Excluded | ExclusionKind::Unimport | ExclusionKind::Invalid)
        ) {
            // The hub never reports an excluded vCluster's cluster as deleted by a user;
            // if it seems to, the deletion is the un-import's, not a user's.
            self.event(&p, true, "UninstallRefused", &format!(
                "Not uninstalling this vCluster: it is excluded from import, so the deletion of Rancher cluster {} \
                 is not taken for a user's. Nothing was removed.", p.cluster)).await;
            return;
        }
        if !was_imported(state_before.as_deref()) {
            // Only an imported vCluster's cluster can have been deleted by a user; one
            // included again after an un-import has no state, and the cluster the hub
            // deleted for the un-import is not a user's deletion.
            self.event(&p, true, "UninstallRefused", &format!(
                "Not uninstalling this vCluster: its Service did not show it imported into Rancher ({} was {}) \
                 when the hub reported Rancher cluster {} deleted, so the deletion is not taken for a user's. \
                 Nothing was removed.", keys::ANNOTATION_STATE,
                state_before.as_deref().map_or("unset".to_string(), |s| format!("{s:?}")), p.cluster)).await;
            return;
        }
        if p.release != p.service {
            self.event(&p, true, "UninstallSkipped", &format!(
                "Not uninstalling this vCluster: its Helm release cannot be identified (the Service's release label is {:?}, \
                 not its name {}). Nothing was removed; uninstall it with helm uninstall <release> -n {}.",
                p.release, p.service, p.namespace)).await;
            return;
        }
        self.limiter.acquire().await;
        if let Err(e) = self.markers.put(&p).await {
            self.event(&p, true, "UninstallFailed", &format!(
                "Not uninstalling this vCluster: the agent cannot record the pending uninstall in its own namespace \
                 ({}); nothing was removed. Check the agent's RBAC (chart value uninstall.enabled).",
                crate::error_line(&e))).await;
            return;
        }
        self.event(&p, true, "UninstallingVCluster", &format!(
            "Uninstalling vCluster {who} because its Rancher cluster {} was deleted in Rancher and \
             uninstall-on-cluster-delete is set ({asked_by}). PersistentVolumeClaims of its StatefulSet are kept.",
            p.cluster)).await;
        self.uninstall(&p).await;
    }

    async fn event(&self, p: &Pending, warning: bool, reason: &str, text: &str) {
        self.limiter.acquire().await;
        note::event(&self.client, &self.instance, p, warning, reason, text).await;
    }

    /// Removes the release of `p` (its proof is recorded) and reports the result.
    async fn uninstall(&mut self, p: &Pending) {
        let who = format!("{}/{}", p.namespace, p.service);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &p.namespace);
        let lp = ListParams::default().labels(&secret_selector(&p.release));
        let found = match secrets.list(&lp).await {
            Ok(l) => release::latest(&l.items, &p.release, &p.namespace),
            Err(e) => Err(format!(
                "listing its Helm release Secrets failed: {}",
                crate::error_line(&e)
            )),
        };
        let (rel, storage) = match found {
            Ok(Some(found)) => found,
            Ok(None) => {
                warn!(vcluster = %who, release = %p.release, "no Helm release Secret found; nothing removed");
                self.event(p, true, "UninstallSkipped", &format!(
                    "Not uninstalling vCluster {who}: no Helm release Secret {}* in namespace {} \
                     (installed without Helm, or uninstalled already). Nothing was removed.",
                    release::secret_prefix(&p.release), p.namespace)).await;
                self.markers.done(p).await;
                return;
            }
            Err(why) => {
                warn!(vcluster = %who, %why, "cannot read the vCluster's Helm release; nothing removed");
                self.event(p, true, "UninstallFailed", &format!(
                    "Not uninstalling vCluster {who}: {why}. Nothing was removed; uninstall it with helm uninstall {} -n {}.",
                    p.release, p.namespace)).await;
                self.markers.done(p).await;
                return;
            }
        };
        let listed = match release::listed(&rel.manifest) {
            Ok(l) => l,
            Err(why) => {
                self.event(p, true, "UninstallFailed", &format!(
                    "Not uninstalling vCluster {who}: {why}. Nothing was removed; uninstall it with helm uninstall {} -n {}.",
                    p.release, p.namespace)).await;
                self.markers.done(p).await;
                return;
            }
        };
        let (candidates, mut left) = select::candidates(&listed, &p.namespace, &p.service);
        let mut out = Outcome::default();
        let mut todo = candidates;
        for round in 1..=ROUNDS {
            let mut again = Vec::new();
            for c in todo {
                match self.remove(p, &c).await {
                    Removal::Removed => out.removed.push(c.listed.to_string()),
                    Removal::Gone => {}
                    Removal::Left(why) => left.push(Left {
                        what: c.listed.to_string(),
                        why,
                    }),
                    Removal::Retry(why) => {
                        if round == ROUNDS {
                            out.failed.push(format!("{} ({why})", c.listed));
                        }
                        again.push(c);
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            todo = again;
            if round < ROUNDS {
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
        out.left = left;
        if out.failed.is_empty() {
            for name in &storage {
                self.limiter.acquire().await;
                match secrets.delete(name, &DeleteParams::default()).await {
                    Ok(_) => out
                        .removed
                        .push(format!("Secret {name} (Helm release record)")),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => out.failed.push(format!(
                        "Secret {name} (Helm release record: {})",
                        crate::error_line(&e)
                    )),
                }
            }
        }
        self.markers.done(p).await;
        self.report(p, &out).await;
    }

    /// Checks one candidate on the live object and deletes it (UID precondition).
    async fn remove(&self, p: &Pending, c: &Candidate) -> Removal {
        let k = c.kind;
        let ar = ApiResource {
            group: k.group.into(),
            version: k.version.into(),
            api_version: if k.group.is_empty() {
                k.version.into()
            } else {
                format!("{}/{}", k.group, k.version)
            },
            kind: k.kind.into(),
            plural: k.plural.into(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &c.listed.namespace, &ar);
        let meta = match api.get_metadata_opt(&c.listed.name).await {
            Ok(Some(m)) => m.metadata,
            Ok(None) => return Removal::Gone,
            Err(e) => return classify(&e, "reading it"),
        };
        let empty = Default::default();
        if !select::owned_by(
            meta.annotations.as_ref().unwrap_or(&empty),
            meta.labels.as_ref().unwrap_or(&empty),
            &p.release,
            &p.namespace,
        ) {
            return Removal::Left(format!(
                "it does not carry the Helm markers of release {}",
                p.release
            ));
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: meta.uid.clone(),
                resource_version: None,
            }),
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        self.limiter.acquire().await;
        match api.delete(&c.listed.name, &dp).await {
            Ok(_) => Removal::Removed,
            Err(kube::Error::Api(s)) if s.code == 404 => Removal::Gone,
            // Replaced between the check and the delete: not the object checked.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Removal::Left("it was replaced while being removed".into())
            }
            Err(e) => classify(&e, "deleting it"),
        }
    }

    async fn report(&self, p: &Pending, out: &Outcome) {
        let who = format!("{}/{}", p.namespace, p.service);
        let left: Vec<String> = out.left.iter().map(|l| l.to_string()).collect();
        info!(vcluster = %who, release = %p.release, removed = ?out.removed, left = ?left,
            failed = ?out.failed, "vCluster uninstall finished");
        let list = |v: &[String]| {
            if v.is_empty() {
                "nothing".to_string()
            } else {
                v.join(", ")
            }
        };
        let pvcs = format!(
            "PersistentVolumeClaims of its StatefulSet (e.g. data-{}-0) were kept; delete them to free the data.",
            p.service
        );
        if out.failed.is_empty() {
            self.event(p, !left.is_empty(), "VClusterUninstalled", &format!(
                "Uninstalled vCluster {who} (Helm release {}). Removed: {}. Left in place: {}. {pvcs}",
                p.release, list(&out.removed), list(&left))).await;
        } else {
            self.event(p, true, "UninstallIncomplete", &format!(
                "Uninstalling vCluster {who} did not finish. Could not remove: {}. Removed: {}. Left: {}. \
                 The Helm release record was kept; finish with helm uninstall {} -n {}. {pvcs}",
                list(&out.failed), list(&out.removed), list(&left), p.release, p.namespace)).await;
        }
    }
}

/// What became of one candidate.
enum Removal {
    Removed,
    /// Not there (already removed).
    Gone,
    /// Left on purpose, and why.
    Left(String),
    /// Failed; worth another round.
    Retry(String),
}

/// A refusal (403 and other 4xx) leaves the object; anything else is retried.
fn classify(e: &kube::Error, doing: &str) -> Removal {
    match e {
        kube::Error::Api(s) if s.code == 403 => Removal::Left(format!(
            "the agent may not {doing}: forbidden; enable uninstall.enabled in the agent chart"
        )),
        kube::Error::Api(s) if (400..500).contains(&s.code) => {
            Removal::Left(format!("{doing} was refused: {}", s.message))
        }
        other => Removal::Retry(format!("{doing} failed: {}", crate::error_line(other))),
    }
}
