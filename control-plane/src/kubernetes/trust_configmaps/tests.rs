//! The trust-bundle ConfigMaps against a mock API server standing in for a real one
//! (none can run on this machine), with the real CA and its rotation.

use std::collections::BTreeMap;

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::kubernetes::api_mock::{self, ApiMock, Call};

fn config_map(namespace: &str, pem: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP,
            "namespace": namespace,
            "resourceVersion": resource_version,
            "uid": "6f0d7b2e-1111-4222-8333-444455556666",
        },
        "data": { "ca.pem": pem },
    })
}

#[tokio::test]
async fn the_config_map_is_created_then_replaced_only_when_the_bundle_differs() {
    let (client, mut api) = api_mock::client();
    let path = "/api/v1/namespaces/shop/configmaps";

    let writing = tokio::spawn({
        let client = client.clone();
        async move { write(&client, "shop", "PEM-1").await }
    });
    let get = api.next().await;
    assert_eq!(
        (get.method.clone(), get.path.as_str()),
        (Method::GET, &*format!("{path}/{CONFIG_MAP}"))
    );
    get.fail(
        404,
        "NotFound",
        "configmaps \"seam-trust-bundle\" not found",
    );
    let create = api.next().await;
    assert_eq!(
        (
            create.method.clone(),
            create.path.split('?').next().unwrap()
        ),
        (Method::POST, path)
    );
    assert_eq!(create.body["metadata"]["name"], CONFIG_MAP);
    assert_eq!(create.body["data"], json!({ "ca.pem": "PEM-1" }));
    create.echo(201, "10");
    assert_eq!(writing.await.unwrap().unwrap(), Written::Created);

    let writing = tokio::spawn({
        let client = client.clone();
        async move { write(&client, "shop", "PEM-1").await }
    });
    api.next()
        .await
        .reply(200, &config_map("shop", "PEM-1", "10"));
    assert_eq!(writing.await.unwrap().unwrap(), Written::Unchanged);

    let writing = tokio::spawn(async move { write(&client, "shop", "PEM-2").await });
    api.next()
        .await
        .reply(200, &config_map("shop", "PEM-1", "10"));
    let replace = api.next().await;
    assert_eq!(replace.method, Method::PUT);
    assert_eq!(
        replace.path.split('?').next().unwrap(),
        format!("{path}/{CONFIG_MAP}")
    );
    assert_eq!(replace.body["metadata"]["resourceVersion"], "10");
    assert_eq!(replace.body["data"], json!({ "ca.pem": "PEM-2" }));
    replace.echo(200, "11");
    assert_eq!(writing.await.unwrap().unwrap(), Written::Replaced);
}

/// A little stand-in API server: Namespaces from `namespaces`, ConfigMaps kept in
/// `config_maps`; watch requests are held open (and kept, so the watcher sees no error)
/// or answered with the `added` namespaces once.
struct Cluster {
    api: ApiMock,
    namespaces: Vec<&'static str>,
    added: Vec<&'static str>,
    config_maps: BTreeMap<String, String>,
    held_watches: Vec<Call>,
}

fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "resourceVersion": "100", "labels": { "kubernetes.io/metadata.name": name } },
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active" },
    })
}

impl Cluster {
    /// Answers requests until `done` holds for the ConfigMaps.
    async fn serve_until(&mut self, done: impl Fn(&BTreeMap<String, String>) -> bool) {
        while !done(&self.config_maps) {
            let call = self.api.next().await;
            let path = call.path.split('?').next().unwrap().to_owned();
            let query = call.path.split('?').nth(1).unwrap_or("").to_owned();
            if path == "/api/v1/namespaces" {
                if query.contains("watch=true") {
                    if self.added.is_empty() {
                        self.held_watches.push(call);
                    } else {
                        let lines: String = std::mem::take(&mut self.added)
                            .into_iter()
                            .map(|name| {
                                format!(
                                    "{}\n",
                                    json!({ "type": "ADDED", "object": namespace(name) })
                                )
                            })
                            .collect();
                        call.respond_raw(200, lines);
                    }
                } else {
                    let items: Vec<Value> =
                        self.namespaces.iter().map(|name| namespace(name)).collect();
                    call.reply(
                        200,
                        &json!({
                            "apiVersion": "v1", "kind": "NamespaceList",
                            "metadata": { "resourceVersion": "100" }, "items": items,
                        }),
                    );
                }
                continue;
            }
            let namespace = path
                .strip_prefix("/api/v1/namespaces/")
                .and_then(|rest| rest.split('/').next())
                .unwrap()
                .to_owned();
            match call.method {
                Method::GET => match self.config_maps.get(&namespace) {
                    Some(pem) => call.reply(200, &config_map(&namespace, pem, "5")),
                    None => call.fail(
                        404,
                        "NotFound",
                        "configmaps \"seam-trust-bundle\" not found",
                    ),
                },
                Method::POST | Method::PUT => {
                    let pem = call.body["data"]["ca.pem"].as_str().unwrap().to_owned();
                    self.config_maps.insert(namespace, pem);
                    let status = if call.method == Method::POST {
                        201
                    } else {
                        200
                    };
                    call.echo(status, "6");
                }
                other => panic!("unexpected {other} {path}"),
            }
        }
    }
}

#[tokio::test]
async fn every_namespace_gets_the_bundle_new_ones_too_and_a_rotation_rewrites_them_all() {
    let state = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::load_or_create(state.path(), "seam.local").unwrap());
    let (client, api) = api_mock::client();
    let mut cluster = Cluster {
        api,
        namespaces: vec![
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "shop",
        ],
        added: vec!["payments"],
        config_maps: BTreeMap::new(),
        held_watches: Vec::new(),
    };
    let task = tokio::spawn(run(client, ca.clone()));

    let one_root = bundle_pem(&ca.trust_bundle());
    assert!(!one_root.contains("PRIVATE KEY"));
    cluster.serve_until(|maps| maps.len() == 3).await;
    let names: Vec<&str> = cluster.config_maps.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["default", "payments", "shop"],
        "not the cluster's own namespaces"
    );
    assert!(cluster.config_maps.values().all(|pem| *pem == one_root));

    ca.introduce_root().unwrap();
    let two_roots = bundle_pem(&ca.trust_bundle());
    cluster
        .serve_until(|maps| maps.values().all(|pem| *pem == two_roots))
        .await;
    assert_eq!(two_roots.matches("BEGIN CERTIFICATE").count(), 2);
    task.abort();
}
