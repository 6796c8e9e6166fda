//! `seamctl install`: prints the manifests that install Seam in a cluster (namespace,
//! ServiceAccount and least-privilege RBAC, the control plane's Deployment (two replicas
//! by default) with its PodDisruptionBudget, its Service, the injection webhook's
//! configuration), from one commented template so that the printed YAML explains its
//! choices. Output is deterministic: `deploy/kubernetes/seam.yaml`
//! is this command's output, and a test keeps the two equal.

/// The manifests, with `{{image}}`, `{{replicas}}` and `{{disruption_budget}}` where
/// they go.
const TEMPLATE: &str = include_str!("install/seam.yaml");
/// The control plane's PodDisruptionBudget, with several replicas only.
const DISRUPTION_BUDGET: &str = include_str!("install/disruption_budget.yaml");
/// Two: one survives a replica's or a node's loss, and proxies fail over to it.
pub const DEFAULT_REPLICAS: u16 = 2;

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The image holding seam-control-plane, seam-proxy and seamctl.
    #[arg(long, value_name = "IMAGE", default_value = crate::injector::DEFAULT_IMAGE)]
    pub image: String,
    /// How many control-plane replicas the Deployment runs (they share the mesh CA).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REPLICAS,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub replicas: u16,
}

/// The manifests for `image`, with `replicas` control planes.
pub fn render(image: &str, replicas: u16) -> String {
    let disruption_budget = if replicas > 1 { DISRUPTION_BUDGET } else { "" };
    TEMPLATE
        .replace("{{image}}", image)
        .replace("{{replicas}}", &replicas.to_string())
        .replace("{{disruption_budget}}\n", disruption_budget)
}

pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.image.is_empty() && !args.image.chars().any(char::is_whitespace),
        "--image {:?} is not an image reference",
        args.image
    );
    print!("{}", render(&args.image, args.replicas));
    Ok(())
}

#[cfg(test)]
mod tests;
