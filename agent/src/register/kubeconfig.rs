//! Pointing the vCluster's kubeconfig at its Service. vCluster writes
//! `https://localhost:8443` into the `vc-<name>` kubeconfig unless `exportKubeConfig.server`
//! was set; from the Job's pod that address is wrong, while the vCluster's serving
//! certificate also covers `<name>.<namespace>`, so the Service URL works with the same CA.

use kube::config::Kubeconfig;

/// True for the vCluster default server addresses.
pub fn is_default_server(server: &str) -> bool {
    let s = server.trim().trim_end_matches('/');
    matches!(
        s,
        "https://localhost:8443" | "https://127.0.0.1:8443" | "https://[::1]:8443"
    )
}

/// The server to use: `service_url` instead of a default one, anything custom kept.
pub fn rewrite_server(server: &str, service_url: Option<&str>) -> String {
    match service_url {
        Some(url) if is_default_server(server) => url.to_string(),
        _ => server.to_string(),
    }
}

/// Rewrites every cluster entry's server; returns whether anything changed.
pub fn rewrite(kubeconfig: &mut Kubeconfig, service_url: Option<&str>) -> bool {
    let mut changed = false;
    for named in &mut kubeconfig.clusters {
        if let Some(cluster) = named.cluster.as_mut()
            && let Some(server) = cluster.server.as_mut()
        {
            let new = rewrite_server(server, service_url);
            if new != *server {
                *server = new;
                changed = true;
            }
        }
    }
    changed
}

/// The server of the current context (or the first cluster), for messages.
pub fn current_server(kubeconfig: &Kubeconfig) -> Option<String> {
    let cluster_name = kubeconfig
        .current_context
        .as_ref()
        .and_then(|cur| kubeconfig.contexts.iter().find(|c| &c.name == cur))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = match cluster_name {
        Some(n) => kubeconfig.clusters.iter().find(|c| c.name == n),
        None => kubeconfig.clusters.first(),
    };
    cluster
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: my-vcluster
  cluster:
    server: https://localhost:8443
    certificate-authority-data: Zm9v
contexts:
- name: my-vcluster
  context:
    cluster: my-vcluster
    user: my-vcluster
current-context: my-vcluster
users:
- name: my-vcluster
  user:
    token: abc
"#;

    #[test]
    fn default_server_is_replaced_by_the_service_url() {
        let mut kc = Kubeconfig::from_yaml(KUBECONFIG).expect("kubeconfig");
        assert!(rewrite(&mut kc, Some("https://vc1.team-a:443")));
        assert_eq!(
            current_server(&kc).as_deref(),
            Some("https://vc1.team-a:443")
        );
    }

    #[test]
    fn custom_server_is_kept() {
        assert_eq!(
            rewrite_server("https://vc1.example.com", Some("https://vc1.team-a:443")),
            "https://vc1.example.com"
        );
        assert_eq!(
            rewrite_server("https://127.0.0.1:8443/", Some("https://x:443")),
            "https://x:443"
        );
        assert_eq!(
            rewrite_server("https://localhost:8443", None),
            "https://localhost:8443"
        );
    }
}
