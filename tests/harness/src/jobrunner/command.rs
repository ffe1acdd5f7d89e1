//! Turns a Job's container into a local process invocation, as a pure function: the
//! image's entrypoint becomes the agent binary, and every path or address that only
//! makes sense inside a pod is rewritten to its stand-in on this machine — volume mount
//! paths to the directories the runner materialised, the termination-message path to a
//! temp file, and a mapped vCluster Service URL to the loopback API server that plays it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use crate::servicemap::ServiceMap;

/// Where the kubelet would write a container's termination message by default.
pub const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

/// Environment variable through which `vclink-agent register` takes its termination-log
/// path when no flag names it; set by the runner so a Job that relies on the default
/// never writes to the real `/dev/termination-log` of the test machine.
pub const TERMINATION_LOG_ENV: &str = "VCLINK_TERMINATION_LOG";

/// Pod-side paths and their local stand-ins for one container.
#[derive(Debug, Clone, Default)]
pub struct Rewrites {
    /// (mountPath in the pod, local directory holding the volume's files).
    pub mounts: Vec<(String, PathBuf)>,
    /// (terminationMessagePath in the pod, local file).
    pub termination: (String, PathBuf),
    /// Service address → loopback URL.
    pub services: ServiceMap,
}

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Program and arguments, rewritten.
    pub argv: Vec<String>,
    /// Environment handed to the process (values resolved and rewritten).
    pub env: Vec<(String, String)>,
    /// The environment as the pod spec declares it: literal values rewritten, values
    /// from Secrets/ConfigMaps shown as `<secretKeyRef name/key>` — so a test can check
    /// the declared environment for credentials without tripping on Secret-sourced ones.
    pub declared_env: Vec<(String, String)>,
}

/// A `valueFrom` reference the pod spec makes: (kind "secret"|"configmap", name, key).
pub type KeyRef = (&'static str, String, String);

/// The Secret and ConfigMap keys `c`'s environment reads (to be fetched before [`build`]).
pub fn key_refs(c: &Container) -> Vec<KeyRef> {
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(s) = &from.secret_key_ref {
            out.push(("secret", s.name.clone(), s.key.clone()));
        }
        if let Some(m) = &from.config_map_key_ref {
            out.push(("configmap", m.name.clone(), m.key.clone()));
        }
    }
    out
}

/// Builds the invocation: `[agent_binary] + command[1..] + args`, env from the container
/// (`resolved` holds the values of [`key_refs`]; a missing optional ref is skipped, a
/// missing required one is an error naming it, like the kubelet's
/// CreateContainerConfigError).
pub fn build(
    agent_binary: &Path,
    c: &Container,
    resolved: &HashMap<KeyRef, String>,
    rw: &Rewrites,
) -> Result<Invocation, String> {
    let mut argv = vec![agent_binary.to_string_lossy().into_owned()];
    argv.extend(
        c.command
            .iter()
            .flatten()
            .skip(1)
            .chain(c.args.iter().flatten())
            .map(|a| rewrite(a, rw)),
    );

    let mut env = Vec::new();
    let mut declared_env = Vec::new();
    for e in c.env.iter().flatten() {
        if let Some(from) = &e.value_from {
            let (r, optional) = if let Some(s) = &from.secret_key_ref {
                (
                    ("secret", s.name.clone(), s.key.clone()),
                    s.optional == Some(true),
                )
            } else if let Some(m) = &from.config_map_key_ref {
                (
                    ("configmap", m.name.clone(), m.key.clone()),
                    m.optional == Some(true),
                )
            } else {
                // fieldRef/resourceFieldRef: nothing in the harness needs them.
                continue;
            };
            match resolved.get(&r) {
                Some(v) => {
                    env.push((e.name.clone(), rewrite(v, rw)));
                    declared_env.push((e.name.clone(), format!("<{}KeyRef {}/{}>", r.0, r.1, r.2)));
                }
                None if optional => {}
                None => return Err(format!("couldn't find key {} in {} {}", r.2, r.0, r.1)),
            }
        } else {
            let v = rewrite(e.value.as_deref().unwrap_or(""), rw);
            env.push((e.name.clone(), v.clone()));
            declared_env.push((e.name.clone(), v));
        }
    }
    let term_local = rw.termination.1.to_string_lossy().into_owned();
    let mentions_term = argv.iter().any(|a| a.contains(&term_local))
        || env.iter().any(|(_, v)| v.contains(&term_local));
    if !mentions_term && !env.iter().any(|(k, _)| k == TERMINATION_LOG_ENV) {
        env.push((TERMINATION_LOG_ENV.to_owned(), term_local));
    }
    Ok(Invocation {
        argv,
        env,
        declared_env,
    })
}

/// Rewrites one argument or environment value; `--flag=value` rewrites the value part.
pub fn rewrite(arg: &str, rw: &Rewrites) -> String {
    if arg.starts_with('-')
        && let Some((flag, value)) = arg.split_once('=')
    {
        return format!("{flag}={}", rewrite_value(value, rw));
    }
    rewrite_value(arg, rw)
}

fn rewrite_value(value: &str, rw: &Rewrites) -> String {
    if let Some(target) = rw.services.resolve(value) {
        return target;
    }
    if value == rw.termination.0 {
        return rw.termination.1.to_string_lossy().into_owned();
    }
    // The longest mount path wins, as with nested mounts in a pod.
    let best = rw
        .mounts
        .iter()
        .filter_map(|(mp, local)| under(value, mp).map(|rest| (mp.len(), local, rest)))
        .max_by_key(|(len, _, _)| *len);
    match best {
        Some((_, local, "")) => local.to_string_lossy().into_owned(),
        Some((_, local, rest)) => local.join(rest).to_string_lossy().into_owned(),
        None => value.to_owned(),
    }
}

/// `Some(rest)` when `path` is `mount` itself (`rest` empty) or lies below it.
fn under<'a>(path: &'a str, mount: &str) -> Option<&'a str> {
    let mount = mount.trim_end_matches('/');
    let rest = path.strip_prefix(mount)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw() -> Rewrites {
        let services = ServiceMap::new();
        services.insert("https://vc1.team-a:443", "https://127.0.0.1:40000");
        Rewrites {
            mounts: vec![
                (
                    "/etc/vclink/vcluster".into(),
                    PathBuf::from("/tmp/r/vol-kubeconfig"),
                ),
                (
                    "/etc/vclink/registration/".into(),
                    PathBuf::from("/tmp/r/vol-reg"),
                ),
                (
                    "/etc/vclink/registration/nested".into(),
                    PathBuf::from("/tmp/r/vol-nested"),
                ),
            ],
            termination: (
                DEFAULT_TERMINATION_PATH.into(),
                PathBuf::from("/tmp/r/termination-log"),
            ),
            services,
        }
    }

    #[test]
    fn mount_paths_are_rewritten_on_component_boundaries() {
        let rw = rw();
        assert_eq!(
            rewrite("/etc/vclink/vcluster/config", &rw),
            "/tmp/r/vol-kubeconfig/config"
        );
        assert_eq!(
            rewrite("/etc/vclink/vcluster", &rw),
            "/tmp/r/vol-kubeconfig"
        );
        assert_eq!(
            rewrite("--registration-dir=/etc/vclink/registration", &rw),
            "--registration-dir=/tmp/r/vol-reg"
        );
        assert_eq!(
            rewrite("/etc/vclink/registration/nested/x", &rw),
            "/tmp/r/vol-nested/x"
        );
        assert_eq!(
            rewrite("/etc/vclink/vclusterX/config", &rw),
            "/etc/vclink/vclusterX/config"
        );
        assert_eq!(rewrite("--log-format=json", &rw), "--log-format=json");
    }

    #[test]
    fn termination_log_and_mapped_service_urls_are_replaced() {
        let rw = rw();
        assert_eq!(
            rewrite("--termination-log=/dev/termination-log", &rw),
            "--termination-log=/tmp/r/termination-log"
        );
        assert_eq!(
            rewrite("--service-url=https://vc1.team-a:443", &rw),
            "--service-url=https://127.0.0.1:40000"
        );
        assert_eq!(
            rewrite("https://vc1.team-a:443", &rw),
            "https://127.0.0.1:40000"
        );
        // An unmapped Service stays unreachable, as it would be from this machine.
        assert_eq!(
            rewrite("--service-url=https://vc2.team-a:443", &rw),
            "--service-url=https://vc2.team-a:443"
        );
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    #[test]
    fn argv_replaces_the_entrypoint_and_resolves_env() {
        let c = container(serde_json::json!({
            "name": "register", "image": "ghcr.io/vclink/vclink-agent:0.1.0",
            "command": ["/usr/local/bin/vclink-agent", "register"],
            "args": ["--kubeconfig", "/etc/vclink/vcluster/config", "--termination-log=/dev/termination-log"],
            "env": [
                {"name": "VCLINK_REGISTRATION_DIR", "value": "/etc/vclink/registration"},
                {"name": "SECRET_THING", "valueFrom": {"secretKeyRef": {"name": "reg", "key": "manifest-url"}}},
                {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}}
            ]
        }));
        let refs = key_refs(&c);
        assert_eq!(refs.len(), 2);
        let resolved = HashMap::from([(
            ("secret", "reg".to_owned(), "manifest-url".to_owned()),
            "https://x/T".to_owned(),
        )]);
        let inv = build(Path::new("/bin/agent"), &c, &resolved, &rw()).expect("build");
        assert_eq!(
            inv.argv,
            [
                "/bin/agent",
                "register",
                "--kubeconfig",
                "/tmp/r/vol-kubeconfig/config",
                "--termination-log=/tmp/r/termination-log"
            ]
        );
        assert_eq!(
            inv.env,
            [
                (
                    "VCLINK_REGISTRATION_DIR".to_owned(),
                    "/tmp/r/vol-reg".to_owned()
                ),
                ("SECRET_THING".to_owned(), "https://x/T".to_owned()),
            ]
        );
        assert_eq!(inv.declared_env[1].1, "<secretKeyRef reg/manifest-url>");
    }

    #[test]
    fn missing_required_ref_fails_and_the_termination_log_env_is_injected() {
        let c = container(serde_json::json!({"name": "c", "args": ["register"],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}));
        let err = build(Path::new("/a"), &c, &HashMap::new(), &rw()).expect_err("missing");
        assert!(err.contains("couldn't find key k in secret s"), "{err}");

        let c = container(serde_json::json!({"name": "c", "args": ["register"]}));
        let inv = build(Path::new("/a"), &c, &HashMap::new(), &rw()).expect("build");
        assert_eq!(inv.argv, ["/a", "register"]);
        assert_eq!(
            inv.env,
            [(
                TERMINATION_LOG_ENV.to_owned(),
                "/tmp/r/termination-log".to_owned()
            )]
        );
    }
}
