//! What the Rancher watches do to the hub's state: each reduced event updates the index
//! under the lock, and the vCluster keys it affects go to the work queue at once. The
//! first complete list of every watch makes the hub ready to accept agents. A change of
//! a management cluster also re-checks its host's opt-in: a live stream of a host that
//! lost the label is closed (PERMISSION_DENIED).

use std::time::Instant;

use vclink_proto::Secret;

use crate::core::index::{Crt, MgmtCluster, ProvCluster, Settings, VcKey};
use crate::rancher::watch::{Feed, Op};
use crate::state::Hub;

impl Feed for Hub {
    fn prov(&self, op: Op<ProvCluster>) {
        let keys = {
            let mut w = self.world();
            match op {
                Op::Apply(p) => w.index.apply_prov(p),
                Op::Delete(p) => w.index.delete_prov(&p.at()),
                Op::Replace(all) => w.index.replace_prov(all),
            }
        };
        self.queue.add_all(keys);
    }

    fn legacy(&self, op: Op<(String, String, Option<VcKey>)>) {
        let mut w = self.world();
        match op {
            Op::Apply((ns, name, key)) => w.index.apply_legacy(&ns, &name, key),
            Op::Delete((ns, name, _)) => w.index.apply_legacy(&ns, &name, None),
            Op::Replace(all) => w.index.replace_legacy(all),
        }
    }

    fn project_name(&self, op: Op<(String, String, String)>) {
        // Only new clusters read display names: nothing to requeue.
        let mut w = self.world();
        match op {
            Op::Apply((c, p, n)) => w
                .project_names
                .set(&c, &p, Some(n).filter(|n| !n.is_empty())),
            Op::Delete((c, p, _)) => w.project_names.set(&c, &p, None),
            Op::Replace(all) => w.project_names.replace(all),
        }
    }

    fn mgmt(&self, op: Op<MgmtCluster>) {
        // A host whose cluster lost its opt-in label (or is gone) loses its stream.
        let hosts = match &op {
            Op::Apply(m) | Op::Delete(m) => vec![m.id.clone()],
            Op::Replace(_) => self.live_hosts(),
        };
        let keys = {
            let mut w = self.world();
            match op {
                Op::Apply(m) => w.index.apply_mgmt(m),
                Op::Delete(m) => w.index.delete_mgmt(&m.id),
                Op::Replace(all) => w.index.replace_mgmt(all),
            }
        };
        self.close_not_opted_in(hosts.iter().map(String::as_str));
        self.queue.add_all(keys);
    }

    fn token(&self, op: Op<Crt>) {
        let now = Instant::now();
        let keys = {
            let mut w = self.world();
            match op {
                Op::Apply(c) => w.index.apply_crt(c, now),
                Op::Delete(c) => w.index.delete_crt(&c.mgmt_id, now),
                Op::Replace(all) => w.index.replace_crt(all, now),
            }
        };
        self.queue.add_all(keys);
    }

    fn token_secret(&self, op: Op<(String, Secret)>) {
        let now = Instant::now();
        let keys = {
            let mut w = self.world();
            match op {
                Op::Apply((ns, t)) => w.index.apply_token_secret(&ns, t, now),
                Op::Delete((ns, _)) => w.index.delete_token_secret(&ns, now),
                Op::Replace(all) => w.index.replace_token_secrets(all, now),
            }
        };
        self.queue.add_all(keys);
    }

    fn setting(&self, op: Op<(String, String)>) {
        let set = |(name, value): (String, String), s: &mut Settings| match name.as_str() {
            "agent-tls-mode" => s.agent_tls_mode = Some(value).filter(|v| !v.is_empty()),
            _ => s.cacerts = value,
        };
        let mut w = self.world();
        let s = &mut w.index.settings;
        match op {
            Op::Apply(kv) => set(kv, s),
            Op::Delete((name, _)) => set((name, String::new()), s),
            Op::Replace(all) => {
                *s = Settings::default();
                for kv in all {
                    set(kv, s);
                }
            }
        }
    }

    fn listed(&self) {
        self.set_ready();
    }
}
