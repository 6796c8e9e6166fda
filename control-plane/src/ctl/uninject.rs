//! `seamctl uninject -f FILE|DIR|-`: takes out of Kubernetes YAML exactly what
//! `seamctl inject` (or the webhook) put in: the `seam-init` and `seam-proxy` containers,
//! the `seam-token`, `seam-trust-bundle` and `seam-xtables-lock` volumes and the `seam.io/injected` and
//! `seam.io/inject-skipped` annotations, and a list or map left empty by that removal.

use crate::ctl::inject::yaml::Yaml;
use crate::ctl::kube_inject;
use crate::injector::{annotations, pod};

/// Removes Seam's additions from one pod template (or pod).
pub fn uninject_template(template: &mut Yaml) {
    let Some(map) = template.as_map_mut() else {
        return;
    };
    if let Some(spec) = map.get_mut("spec").and_then(Yaml::as_map_mut) {
        remove_named(
            spec,
            "initContainers",
            &[pod::INIT_CONTAINER, pod::PROXY_CONTAINER],
        );
        // A classic sidecar; the app's containers are never emptied.
        if let Some(Yaml::Seq(containers)) = spec.get_mut("containers") {
            containers.retain(|container| name_of(container) != Some(pod::PROXY_CONTAINER));
        }
        remove_named(
            spec,
            "volumes",
            &[pod::TOKEN_VOLUME, pod::TRUST_VOLUME, pod::XTABLES_VOLUME],
        );
    }
    let mut annotations_were_all_seams = false;
    if let Some(meta) = map.get_mut("metadata").and_then(Yaml::as_map_mut) {
        let mut removed = false;
        if let Some(notes) = meta.get_mut("annotations").and_then(Yaml::as_map_mut) {
            removed |= notes.remove(annotations::INJECTED).is_some();
            removed |= notes.remove(annotations::INJECT_SKIPPED).is_some();
        }
        let emptied = meta
            .get("annotations")
            .and_then(Yaml::as_map)
            .is_some_and(|notes| notes.keys().next().is_none());
        if removed && emptied {
            meta.remove("annotations");
            annotations_were_all_seams = true;
        }
    }
    // A template's metadata the injector had to make.
    let empty_meta = map
        .get("metadata")
        .and_then(Yaml::as_map)
        .is_some_and(|meta| meta.keys().next().is_none());
    if empty_meta && annotations_were_all_seams {
        map.remove("metadata");
    }
}

fn name_of(item: &Yaml) -> Option<&str> {
    item.as_map()?.get("name")?.as_str()
}

/// Removes the items named `names` from the list at `key`, and the list if that empties it.
fn remove_named(spec: &mut crate::ctl::inject::yaml::Mapping, key: &str, names: &[&str]) {
    let Some(Yaml::Seq(items)) = spec.get_mut(key) else {
        return;
    };
    let before = items.len();
    items.retain(|item| !name_of(item).is_some_and(|name| names.contains(&name)));
    if items.len() < before && items.is_empty() {
        spec.remove(key);
    }
}

/// Removes Seam's additions from every pod template of `documents`.
pub fn uninject(source: &str, documents: &mut [Yaml]) -> anyhow::Result<()> {
    for (index, document) in documents.iter_mut().enumerate() {
        let at = format!("{source}: document {}", index + 1);
        kube_inject::visit(document, &at, &mut |_, _, template| {
            uninject_template(template);
            Ok(())
        })?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct UninjectArgs {
    /// Kubernetes YAML: a file, a directory of them, or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub filename: String,
}

/// `seamctl uninject -f`: prints the documents without Seam's additions.
pub fn run(args: UninjectArgs) -> anyhow::Result<()> {
    let mut out = String::new();
    for (source, text) in kube_inject::read_inputs(&args.filename)? {
        if kube_inject::has_comments(&text) {
            eprintln!("note: {source}: comments are not kept (the YAML library drops them)");
        }
        let mut documents = kube_inject::parse(&source, &text)?;
        uninject(&source, &mut documents)?;
        out.push_str(&kube_inject::render(&documents)?);
    }
    print!("{out}");
    Ok(())
}
