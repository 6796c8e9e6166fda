//! `seamctl install`: prints the manifests that install Seam in a cluster (namespace,
//! ServiceAccount and least-privilege RBAC, the control plane's Deployment and Service,
//! the injection webhook's configuration), from one commented template so that the
//! printed YAML explains its choices. Output is deterministic: `deploy/kubernetes/seam.yaml`
//! is this command's output, and a test keeps the two equal.

/// The manifests, with `{{image}}` where the image goes.
const TEMPLATE: &str = include_str!("install/seam.yaml");

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The image holding seam-control-plane, seam-proxy and seamctl.
    #[arg(long, value_name = "IMAGE", default_value = crate::injector::DEFAULT_IMAGE)]
    pub image: String,
}

/// The manifests for `image`.
pub fn render(image: &str) -> String {
    TEMPLATE.replace("{{image}}", image)
}

pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.image.is_empty() && !args.image.chars().any(char::is_whitespace),
        "--image {:?} is not an image reference",
        args.image
    );
    print!("{}", render(&args.image));
    Ok(())
}

#[cfg(test)]
mod tests;
