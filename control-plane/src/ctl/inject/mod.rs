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
mod yaml;

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
pub struct InjectArgs {
    /// The compose file to mesh.
    #[arg(long, value_name = "FILE")]
    pub compose: PathBuf,
    /// A service to leave out of the mesh, copied as it is; repeat for more.
    #[arg(long, value_name = "SERVICE")]
    pub skip: Vec<String>,
    /// How the apps' traffic reaches their proxies.
    #[arg(long, value_enum, default_value_t = Profile::Transparent)]
    pub profile: Profile,
    /// Where to write the meshed compose file (`seam/` goes beside it).
    #[arg(long, value_name = "PATH", default_value = None)]
    pub output: Option<PathBuf>,
}

pub fn run(args: InjectArgs) -> anyhow::Result<()> {
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
    let file = compose::read(&args.compose)?;
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
    let layout = output::Layout::new(&args.compose, args.output.as_deref());
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
