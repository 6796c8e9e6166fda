//! Where the pod template is in each workload kind, so that one injector serves them all:
//! a Pod is its own template; Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController and Job hold one at `spec.template`; a CronJob at
//! `spec.jobTemplate.spec.template`. Other kinds have none and pass through unchanged.

/// The path of the pod template inside an object of `kind`, as tokens; `None` when the
/// kind holds no pod.
pub fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// The workload's name as a service name for a pod the webhook sees: the owner's name,
/// without a ReplicaSet's `-<pod-template-hash>` (so a Deployment's pods are named for the
/// Deployment); for a bare pod its own name, or its `generateName` without the dash.
pub fn workload_name(
    pod_name: Option<&str>,
    generate_name: Option<&str>,
    owner: Option<(&str, &str)>,
    pod_template_hash: Option<&str>,
) -> String {
    if let Some((kind, name)) = owner {
        if kind == "ReplicaSet"
            && let Some(hash) = pod_template_hash
            && let Some(deployment) = name.strip_suffix(&format!("-{hash}"))
        {
            return deployment.to_owned();
        }
        return name.to_owned();
    }
    match (pod_name, generate_name) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) => prefix.trim_end_matches('-').to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_kind_has_its_template_path() {
        assert_eq!(template_path("Pod"), Some(&[][..]));
        assert_eq!(template_path("Deployment"), Some(&["spec", "template"][..]));
        assert_eq!(
            template_path("CronJob"),
            Some(&["spec", "jobTemplate", "spec", "template"][..])
        );
        assert_eq!(template_path("Service"), None);
    }

    #[test]
    fn pods_are_named_for_their_workload() {
        let name = workload_name(
            None,
            Some("web-7d4b9c8f6-"),
            Some(("ReplicaSet", "web-7d4b9c8f6")),
            Some("7d4b9c8f6"),
        );
        assert_eq!(name, "web");
        assert_eq!(
            workload_name(Some("db-0"), None, Some(("StatefulSet", "db")), None),
            "db"
        );
        assert_eq!(workload_name(Some("debug"), None, None, None), "debug");
        assert_eq!(workload_name(None, Some("job-x-"), None, None), "job-x");
    }
}
