//! One call that brings up a complete vclink world for end-to-end tests and the demo:
//! Rancher's local cluster with the Rancher simulator, N downstream clusters (each with
//! kube-controller-manager, imported into the simulator, a Job runner and a
//! `vclink-agent` process) and one `vclink-hub` process. Helpers create simulated
//! vClusters and read what Rancher (the simulator) holds about them.

use std::time::Duration;

use anyhow::Context;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use vclink_envtest::{Cluster, ClusterOptions};
use vclink_rancher_sim::{RancherSim, RancherVersion, SimOptions, TokenMode};

use crate::jobrunner::{JobRunner, RunnerConfig};
use crate::procs::{self, AgentOptions, AgentProcess, HubOptions, HubProcess};
use crate::servicemap::ServiceMap;
use crate::util::wait_for;
use crate::vcluster::{SimVCluster, VClusterSpec};

/// Options of [`E2eEnv::start`].
#[derive(Clone)]
pub struct E2eOptions {
    /// Rancher version the simulator plays.
    pub rancher_version: RancherVersion,
    /// Token presentation (None: the version's default).
    pub token_mode: Option<TokenMode>,
    /// Full simulator options; when set, `rancher_version`/`token_mode` are ignored.
    pub sim: Option<SimOptions>,
    /// Hub `--removal-grace` (default 2 s so deletion tests finish quickly).
    pub removal_grace: Duration,
    /// Number of downstream clusters (default 1).
    pub downstreams: usize,
    /// Start an agent for every downstream (default true).
    pub start_agents: bool,
    /// Opt every downstream in as a host, as an administrator following the README does:
    /// label its Rancher cluster `vclink.io/agent=enabled`, which the hub requires
    /// (default true).
    pub opt_in_hosts: bool,
    /// Hub options (removal grace is taken from `removal_grace` unless set here).
    pub hub: HubOptions,
    /// Options for every agent.
    pub agent: AgentOptions,
}

impl Default for E2eOptions {
    fn default() -> Self {
        E2eOptions {
            rancher_version: RancherVersion::V2_15,
            token_mode: None,
            sim: None,
            removal_grace: Duration::from_secs(2),
            downstreams: 1,
            start_agents: true,
            opt_in_hosts: true,
            hub: HubOptions::default(),
            agent: AgentOptions::default(),
        }
    }
}

/// One downstream cluster with its Job runner and agent (fields drop in order: the
/// agent and runner stop before the API server does).
pub struct Downstream {
    /// Its agent, if started.
    pub agent: Option<AgentProcess>,
    /// Runs the registration Jobs created in it.
    pub runner: JobRunner,
    /// Display name given to the simulator (`downstream-<i>`).
    pub name: String,
    /// Management cluster id (`c-m-…`).
    pub cluster_id: String,
    /// The downstream API server.
    pub cluster: Cluster,
}

/// A running end-to-end environment. Drop order: processes first, clusters last.
pub struct E2eEnv {
    /// The hub.
    pub hub: HubProcess,
    /// Downstream clusters.
    pub downstreams: Vec<Downstream>,
    /// Service address map shared by all vClusters and runners.
    pub services: ServiceMap,
    /// The Rancher simulator.
    pub sim: RancherSim,
    /// Rancher's local cluster.
    pub local: Cluster,
    agent_opts: AgentOptions,
    hub_opts: HubOptions,
}

impl E2eEnv {
    /// Brings everything up; fails with a message naming the piece that did not start.
    pub async fn start(opts: E2eOptions) -> anyhow::Result<E2eEnv> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let local = Cluster::start("local", ClusterOptions::default())
            .await
            .context("starting the local cluster")?;
        let sim_opts = opts.sim.clone().unwrap_or_else(|| SimOptions {
            version: opts.rancher_version,
            token_mode: opts.token_mode,
            ..SimOptions::default()
        });
        let sim = RancherSim::start(&local, sim_opts)
            .await
            .context("starting the Rancher simulator")?;
        let services = ServiceMap::new();
        let agent_binary = procs::binary("vclink-agent")?;

        let mut downstreams = Vec::new();
        for i in 0..opts.downstreams.max(1) {
            let name = format!("downstream-{i}");
            let cluster = Cluster::start(
                &name,
                ClusterOptions {
                    controller_manager: true,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("starting {name}"))?;
            let cluster_id = sim
                .add_downstream(&name, &cluster)
                .await
                .with_context(|| format!("importing {name}"))?;
            if opts.opt_in_hosts {
                opt_in_host(&local, &cluster_id)
                    .await
                    .with_context(|| format!("opting {name} ({cluster_id}) in as a host"))?;
            }
            let runner = JobRunner::start(
                &cluster,
                RunnerConfig {
                    agent_binary: agent_binary.clone(),
                    service_map: services.clone(),
                    image_substring: "vclink".into(),
                },
            )
            .await?;
            downstreams.push(Downstream {
                name,
                cluster_id,
                cluster,
                runner,
                agent: None,
            });
        }

        let mut hub_opts = opts.hub.clone();
        hub_opts.removal_grace = hub_opts.removal_grace.or(Some(opts.removal_grace));
        // Agents are verified for real: TokenReviews through the simulator's cluster proxy
        // with the hub's own Rancher user, unless the test picked an --agent-auth.
        let chooses_auth = hub_opts
            .extra_args
            .iter()
            .any(|f| f.starts_with("--agent-auth"));
        if hub_opts.rancher.is_none() && !chooses_auth {
            let clusters: Vec<&Cluster> = downstreams.iter().map(|d| &d.cluster).collect();
            hub_opts.rancher = Some(
                hub_rancher_auth(&local, &sim, &clusters)
                    .await
                    .context("setting up the hub's Rancher user")?,
            );
        }
        let hub = HubProcess::start(&local, hub_opts.clone())
            .await
            .context("starting vclink-hub")?;
        let mut env = E2eEnv {
            hub,
            downstreams,
            services,
            sim,
            local,
            agent_opts: opts.agent.clone(),
            hub_opts,
        };
        if opts.start_agents {
            for i in 0..env.downstreams.len() {
                env.start_agent(i).await?;
            }
        }
        Ok(env)
    }

    /// Starts (or replaces) the agent of downstream `i`.
    pub async fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let d = self.downstreams.get_mut(i).context("no such downstream")?;
        let agent = AgentProcess::start(
            &d.cluster,
            &self.hub,
            &d.cluster_id,
            self.agent_opts.clone(),
        )
        .await
        .with_context(|| format!("starting the agent of {}", d.name))?;
        d.agent = Some(agent);
        Ok(())
    }

    /// The options the hub was started with, including the Rancher authentication the
    /// environment set up (a test restarting the hub with other flags starts from these).
    pub fn hub_options(&self) -> HubOptions {
        self.hub_opts.clone()
    }

    /// The first downstream (there is always at least one).
    pub fn downstream(&self) -> &Downstream {
        &self.downstreams[0]
    }

    /// The agent of downstream `i`, if started.
    pub fn agent(&mut self, i: usize) -> Option<&mut AgentProcess> {
        self.downstreams.get_mut(i).and_then(|d| d.agent.as_mut())
    }

    /// Creates a simulated vCluster in downstream `i`.
    pub async fn create_vcluster(
        &self,
        i: usize,
        spec: VClusterSpec,
    ) -> anyhow::Result<SimVCluster> {
        let d = self.downstreams.get(i).context("no such downstream")?;
        SimVCluster::create(&d.cluster, &self.sim, &self.services, spec).await
    }

    /// Admin client of the local cluster.
    pub async fn local_client(&self) -> anyhow::Result<kube::Client> {
        self.local.client().await
    }

    /// Provisioning clusters (`provisioning.cattle.io/v1` `Cluster`) in `workspace`.
    pub async fn provisioning_clusters(
        &self,
        workspace: &str,
    ) -> anyhow::Result<Vec<DynamicObject>> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.local_client().await?,
            workspace,
            &provisioning_cluster(),
        );
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// The provisioning cluster vclink created for `vc` (found by its Service-UID label).
    pub async fn provisioning_cluster_for(
        &self,
        workspace: &str,
        vc: &SimVCluster,
    ) -> anyhow::Result<Option<DynamicObject>> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.local_client().await?,
            workspace,
            &provisioning_cluster(),
        );
        let lp = ListParams::default().labels(&format!(
            "{}={}",
            vclink_proto::keys::LABEL_SERVICE_UID,
            vc.service_uid()
        ));
        Ok(api.list(&lp).await?.items.into_iter().next())
    }

    /// A management cluster (`management.cattle.io/v3` `Cluster`) by id.
    pub async fn management_cluster(&self, id: &str) -> anyhow::Result<Option<DynamicObject>> {
        let api: Api<DynamicObject> =
            Api::all_with(self.local_client().await?, &management_cluster());
        Ok(api.get_opt(id).await?)
    }

    /// Waits until `vc` has a provisioning cluster whose `status.ready` is true and
    /// returns (provisioning cluster name, management cluster id).
    pub async fn wait_for_ready_cluster(
        &self,
        workspace: &str,
        vc: &SimVCluster,
        timeout: Duration,
    ) -> anyhow::Result<(String, String)> {
        let what = format!(
            "a ready Rancher cluster for vCluster {}/{}",
            vc.namespace(),
            vc.name()
        );
        Ok(wait_for(&what, timeout, || async {
            let Some(pc) = self.provisioning_cluster_for(workspace, vc).await? else {
                return anyhow::Ok(None);
            };
            let status = pc.data.get("status");
            let ready = status
                .and_then(|s| s.get("ready"))
                .and_then(|r| r.as_bool())
                == Some(true);
            let id = status
                .and_then(|s| s.get("clusterName"))
                .and_then(|c| c.as_str())
                .map(str::to_owned);
            Ok(match (ready, pc.metadata.name, id) {
                (true, Some(n), Some(id)) => Some((n, id)),
                _ => None,
            })
        })
        .await?)
    }
}

/// The label of a Rancher cluster that lets the hub serve its agent (the hub's default
/// `--host-selector`, and the label that makes Fleet deploy the agent).
pub const HOST_OPT_IN_LABEL: (&str, &str) = ("vclink.io/agent", "enabled");

/// Opts the Rancher cluster `id` in as a host: labels its management cluster (what the
/// hub reads) [`HOST_OPT_IN_LABEL`].
pub async fn opt_in_host(local: &Cluster, id: &str) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(local.client().await?, &management_cluster());
    let (k, v) = HOST_OPT_IN_LABEL;
    let patch = serde_json::json!({"metadata": {"labels": {k: v}}});
    api.patch(
        id,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("labelling management cluster {id} {k}={v}"))?;
    Ok(())
}

/// `provisioning.cattle.io/v1` `Cluster`.
pub fn provisioning_cluster() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("provisioning.cattle.io", "v1", "Cluster"),
        "clusters",
    )
}

/// `management.cattle.io/v3` `Cluster`.
pub fn management_cluster() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "Cluster"),
        "clusters",
    )
}

/// Name of the hub's Rancher User in tests (the hub chart's default `userName`).
pub const HUB_RANCHER_USER: &str = "vclink-hub";

/// What a real install does for the hub's Rancher identity (charts/hub
/// rancher-credential.yaml): a User with no password, bound to global role
/// `clusters-create` (the hub creates clusters as it), and in every downstream cluster
/// the RBAC Rancher derives from the GlobalRole's inherited TokenReview RoleTemplate —
/// `create tokenreviews`, nothing else. (The simulator has CRDs only for GlobalRoles, so
/// the downstream ClusterRole and binding are applied here.) Returns the hub's
/// [`RancherAuth`] with a self-issued, rotated token.
pub async fn hub_rancher_auth(
    local: &Cluster,
    sim: &RancherSim,
    downstreams: &[&Cluster],
) -> anyhow::Result<procs::RancherAuth> {
    let users: Api<DynamicObject> = Api::all_with(
        local.client().await?,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("management.cattle.io", "v3", "User"),
            "users",
        ),
    );
    let user: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "management.cattle.io/v3", "kind": "User",
        "metadata": {"name": HUB_RANCHER_USER},
        "displayName": "vclink hub", "principalIds": [format!("local://{HUB_RANCHER_USER}")]}))?;
    users
        .patch(
            HUB_RANCHER_USER,
            &kube::api::PatchParams::apply("vclink-harness").force(),
            &kube::api::Patch::Apply(&user),
        )
        .await
        .context("creating the hub's Rancher User")?;
    // The chart's second GlobalRoleBinding: the hub creates clusters as this user.
    let grbs: Api<DynamicObject> = Api::all_with(
        local.client().await?,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("management.cattle.io", "v3", "GlobalRoleBinding"),
            "globalrolebindings",
        ),
    );
    let grb_name = "vclink-hub-clusters-create";
    let grb: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "management.cattle.io/v3", "kind": "GlobalRoleBinding",
        "metadata": {"name": grb_name},
        "globalRoleName": "clusters-create", "userName": HUB_RANCHER_USER}))?;
    grbs.patch(
        grb_name,
        &kube::api::PatchParams::apply("vclink-harness").force(),
        &kube::api::Patch::Apply(&grb),
    )
    .await
    .context("binding the hub's Rancher User to clusters-create")?;
    for c in downstreams {
        grant_tokenreview(c, HUB_RANCHER_USER).await?;
    }
    Ok(procs::RancherAuth {
        url: sim.server_url(),
        ca_pem: sim.ca_pem(),
        credential: procs::RancherCredential::User(HUB_RANCHER_USER.to_owned()),
        token_ttl: None,
        agent_service_account: None,
    })
}

/// Lets Rancher user `user` (as the cluster proxy impersonates it) create TokenReviews
/// in `cluster`, and nothing else.
pub async fn grant_tokenreview(cluster: &Cluster, user: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let client = cluster.client().await?;
    let pp = kube::api::PatchParams::apply("vclink-harness").force();
    let name = "vclink-hub-tokenreview";
    let role = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}]});
    Api::<ClusterRole>::all(client.clone())
        .patch(name, &pp, &kube::api::Patch::Apply(&role))
        .await
        .context("applying the TokenReview ClusterRole")?;
    let binding_name = format!("{name}-{user}");
    let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": binding_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]});
    Api::<ClusterRoleBinding>::all(client)
        .patch(&binding_name, &pp, &kube::api::Patch::Apply(&binding))
        .await
        .context("binding the TokenReview ClusterRole")?;
    Ok(())
}
