//! `seamctl inject --compose FILE`: meshes an existing docker-compose project. It reads
//! the compose file ([`compose`]), plans the meshed services ([`plan`]: a sidecar
//! `<app>-seam` per service that owns the network namespace the app joins, built in
//! [`sidecar`], and a control plane), writes the mesh file ([`mesh`]) and the meshed
//! compose file with the join tokens as compose secrets ([`output`]). Running it again, on
//! the input or on its own output, writes the same bytes.

mod compose;
mod mesh;
mod output;
mod plan;
mod ports;
mod sidecar;
pub(crate) mod yaml;

use std::path::PathBuf;

use anyhow::Context;

/// How the apps' traffic reaches their proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// iptables in each sidecar's namespace send every TCP connection through the proxy:
    /// nothing in the apps changes, and non-HTTP traffic (a database's) is meshed too.
    Transparent,
    /// The apps' HTTP clients are pointed at the proxy with `HTTP_PROXY`; other traffic
    /// goes as before. No NET_ADMIN capability needed.
    Explicit,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["compose", "filename"])))]
pub struct InjectArgs {
    /// The compose file to mesh.
    #[arg(long, value_name = "FILE")]
    pub compose: Option<PathBuf>,
    /// Kubernetes YAML to inject: a file, a directory of them, or `-` for stdin; the
    /// result goes to stdout (`seamctl inject -f app.yaml | kubectl apply -f -`).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub filename: Option<String>,
    /// A service to leave out of the mesh, copied as it is; repeat for more (--compose only).
    #[arg(long, value_name = "SERVICE", conflicts_with = "filename")]
    pub skip: Vec<String>,
    /// How the apps' traffic reaches their proxies (--compose).
    #[arg(long, value_enum, default_value_t = Profile::Transparent)]
    pub profile: Profile,
    /// Where to write the meshed compose file (`seam/` goes beside it) (--compose).
    #[arg(long, value_name = "PATH", default_value = None, conflicts_with = "filename")]
    pub output: Option<PathBuf>,
    /// The image holding seam-proxy and seamctl (-f).
    #[arg(long, value_name = "IMAGE", default_value = crate::injector::DEFAULT_IMAGE)]
    pub image: String,
    /// Where the injected proxies reach the control plane (-f).
    #[arg(long, value_name = "HOST:PORT", default_value = crate::injector::DEFAULT_CONTROL_PLANE)]
    pub control_plane: String,
    /// `false` for clusters older than 1.29: the proxy becomes the first container and
    /// holds the app's start until it is ready, instead of a native sidecar (-f).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub native_sidecar: bool,
}

impl InjectArgs {
    /// The injector's settings these flags give.
    pub fn settings(&self) -> crate::injector::Settings {
        crate::injector::Settings {
            image: self.image.clone(),
            control_plane: self.control_plane.clone(),
            native_sidecar: self.native_sidecar,
            ..crate::injector::Settings::default()
        }
    }
}

pub fn run(args: InjectArgs) -> anyhow::Result<()> {
    if let Some(filename) = &args.filename {
        return crate::ctl::kube_inject::run(filename, &args.settings());
    }
    let written = inject(&args)?;
    println!(
        "wrote {}, {} and the join tokens in {}\nstart it with: docker-compose -f {} up -d",
        written.compose.display(),
        written.mesh_file.display(),
        written.secrets.display(),
        written.compose.display()
    );
    Ok(())
}

/// Writes the meshed project; returns where.
fn inject(args: &InjectArgs) -> anyhow::Result<output::Layout> {
    let compose_path = args
        .compose
        .as_deref()
        .context("--compose or -f is required")?;
    let file = compose::read(compose_path)?;
    let planned = plan::plan(
        &file.document,
        &plan::Options {
            skip: &args.skip,
            profile: args.profile,
        },
    )
    .with_context(|| format!("{}: cannot mesh", file.path.display()))?;
    for service in &planned.meshed {
        if service.ports.is_empty() {
            eprintln!(
                "note: service {:?} declares no ports (`ports:` or `expose:`): it can call \
                 other services through the mesh, but no one can call it",
                service.name
            );
        }
    }
    let layout = output::Layout::new(compose_path, args.output.as_deref());
    let tokens = layout.tokens(planned.meshed.iter().map(|service| service.name.as_str()))?;
    let compose_text = render(&planned.compose)?;
    layout.write(&compose_text, &mesh::render(&planned.meshed, &tokens))?;
    Ok(layout)
}

/// The meshed compose file's text.
fn render(document: &yaml::Mapping) -> anyhow::Result<String> {
    // Long strings stay on one line, as compose files are written, rather than folded.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    let body = serde_saphyr::to_string_with_options(document, options)
        .context("cannot write the compose file")?;
    Ok(format!(
        "# Meshed by `seamctl inject`: each service's sidecar <service>-seam owns its network\n\
         # namespace. Running inject on this file again changes nothing.\n{body}"
    ))
}

#[cfg(test)]
mod tests;
