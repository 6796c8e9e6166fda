//! `seamctl inject -f FILE|DIR|-`: the webhook's injection, offline, over Kubernetes YAML
//! (what `kubectl apply -f` takes): multi-document files, `kind: List`, every workload
//! kind's pod template ([`crate::injector::workloads`]); other kinds pass through
//! unchanged. Keys keep their order (serde-saphyr drops comments); the injector's
//! additions are applied to the document in place, so injecting twice equals injecting
//! once. The result goes to stdout; what was left alone, and why, to stderr.

use std::path::Path;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use crate::ctl::inject::yaml::{Mapping, Yaml};
use crate::injector::{self, Addition, Decision, PodInput, Settings, workloads};

/// The documents of every input `-f` names: a file, the YAML/JSON files of a directory
/// (sorted by name), or `-` for stdin. Each is `(where, text)`.
pub fn read_inputs(spec: &str) -> anyhow::Result<Vec<(String, String)>> {
    if spec == "-" {
        let text = std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?;
        return Ok(vec![("<stdin>".to_owned(), text)]);
    }
    let path = Path::new(spec);
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map(|text| (path.display().to_string(), text))
    };
    if !path.is_dir() {
        return Ok(vec![read(path)?]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("cannot read {spec}"))? {
        let file = entry.with_context(|| format!("cannot read {spec}"))?.path();
        let manifest = file
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| matches!(ext, "yaml" | "yml" | "json"));
        if manifest && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    files.iter().map(|file| read(file)).collect()
}

/// The documents of one input.
pub fn parse(source: &str, text: &str) -> anyhow::Result<Vec<Yaml>> {
    let documents: Vec<Yaml> =
        serde_saphyr::from_multiple(text).with_context(|| format!("{source}: not valid YAML"))?;
    Ok(documents
        .into_iter()
        .filter(|document| *document != Yaml::Null)
        .collect())
}

/// The documents as one multi-document YAML text.
pub fn render(documents: &[Yaml]) -> anyhow::Result<String> {
    let mut text = String::new();
    for document in documents {
        let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
        let body =
            serde_saphyr::to_string_with_options(document, options).context("cannot write YAML")?;
        text.push_str("---\n");
        text.push_str(&body);
        if !body.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(text)
}

/// Injects every pod template of `documents` in place; returns a line per object left
/// alone (why).
pub fn inject(
    source: &str,
    documents: &mut [Yaml],
    settings: &Settings,
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for (index, document) in documents.iter_mut().enumerate() {
        let at = format!("{source}: document {}", index + 1);
        visit(document, &at, &mut |kind, name, template| {
            let object = format!("{at} ({kind} {name})");
            let json = serde_json::to_value(&*template)
                .with_context(|| format!("{object}: cannot read"))?;
            let parsed: PodTemplateSpec = serde_path_to_error::deserialize(json)
                .with_context(|| format!("{object}: not a valid pod template"))?;
            let Some(spec) = parsed.spec.as_ref() else {
                bail!("{object}: the pod template has no spec");
            };
            let meta = parsed.metadata.unwrap_or_default();
            let input = PodInput {
                meta: &meta,
                spec,
                workload: name,
                namespace_enabled: true,
            };
            match injector::decide(&input, settings).with_context(|| object.clone())? {
                Decision::Inject(additions) => {
                    for addition in &additions {
                        apply(template, addition).with_context(|| object.clone())?;
                    }
                }
                Decision::Skip(reason) => {
                    notes.push(format!("{kind} {name}: left alone: {reason}"))
                }
            }
            Ok(())
        })?;
    }
    Ok(notes)
}

/// Calls `each(kind, name, template)` for every object holding a pod template,
/// looking inside `kind: List`.
pub fn visit(
    document: &mut Yaml,
    at: &str,
    each: &mut dyn FnMut(&str, &str, &mut Yaml) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(object) = document.as_map_mut() else {
        return Ok(());
    };
    let kind = object
        .get("kind")
        .and_then(Yaml::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind == "List" {
        if let Some(Yaml::Seq(items)) = object.get_mut("items") {
            for (index, item) in items.iter_mut().enumerate() {
                visit(item, &format!("{at}, item {}", index + 1), each)?;
            }
        }
        return Ok(());
    }
    let Some(path) = workloads::template_path(&kind) else {
        return Ok(());
    };
    let name = object
        .get("metadata")
        .and_then(Yaml::as_map)
        .and_then(|meta| meta.get("name"))
        .and_then(Yaml::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut node = &mut *document;
    for token in path {
        node = match node.as_map_mut().and_then(|map| map.get_mut(token)) {
            Some(child) => child,
            None => bail!("{at} ({kind} {name}): has no {}", path.join(".")),
        };
    }
    each(&kind, &name, node)
}

/// Applies one `add` to a YAML node, as RFC 6902 defines it for the paths the injector
/// makes (keys of maps; indexes or `-` of lists), making missing parent maps.
fn apply(root: &mut Yaml, addition: &Addition) -> anyhow::Result<()> {
    let Some((last, parents)) = addition.path.split_last() else {
        bail!("cannot replace the whole pod template");
    };
    let mut node = root;
    for token in parents {
        node = match node {
            // A template may have no `metadata` yet: made here (the webhook's pods always
            // have one, so its patches never need this).
            Yaml::Map(map) => {
                if !map.contains_key(token) {
                    map.insert(token, Yaml::Map(Mapping::new()));
                }
                map.get_mut(token).expect("the key was just made")
            }
            Yaml::Seq(items) => {
                let index: usize = token.parse().context("not a list index")?;
                items.get_mut(index).context("no such list item")?
            }
            other => bail!("{token}: expected a map or a list, found {}", other.kind()),
        };
    }
    let value = to_yaml(&addition.value);
    match node {
        Yaml::Map(map) => map.insert(last, value),
        Yaml::Seq(items) if last == "-" => items.push(value),
        Yaml::Seq(items) => {
            let index: usize = last.parse().context("not a list index")?;
            if index > items.len() {
                bail!("list index {index} is past the end");
            }
            items.insert(index, value);
        }
        other => bail!("{last}: expected a map or a list, found {}", other.kind()),
    }
    Ok(())
}

/// JSON from the injector as YAML, each map's `name` first (as people write them).
fn to_yaml(value: &Value) -> Yaml {
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(flag) => Yaml::Bool(*flag),
        Value::Number(number) => number
            .as_i64()
            .map(Yaml::Int)
            .or_else(|| number.as_u64().map(Yaml::UInt))
            .unwrap_or_else(|| Yaml::Float(number.as_f64().unwrap_or_default())),
        Value::String(text) => Yaml::str(text),
        Value::Array(items) => Yaml::Seq(items.iter().map(to_yaml).collect()),
        Value::Object(object) => {
            let mut map = Mapping::new();
            if let Some(name) = object.get("name") {
                map.insert("name", to_yaml(name));
            }
            for (key, item) in object {
                if key != "name" {
                    map.insert(key, to_yaml(item));
                }
            }
            Yaml::Map(map)
        }
    }
}

/// Whether `text` has a comment line, which the output will not have.
pub fn has_comments(text: &str) -> bool {
    text.lines().any(|line| line.trim_start().starts_with('#'))
}

/// `seamctl inject -f`: prints the injected documents of every input.
pub fn run(spec: &str, settings: &Settings) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for (source, text) in read_inputs(spec)? {
        if has_comments(&text) {
            eprintln!("note: {source}: comments are not kept (the YAML library drops them)");
        }
        let mut documents = parse(&source, &text)?;
        for note in inject(&source, &mut documents, settings)? {
            eprintln!("{note}");
        }
        out.push(render(&documents)?);
    }
    print!("{}", out.concat());
    Ok(())
}

#[cfg(test)]
mod tests;
