use super::*;

#[test]
fn opening_or_reading_the_file_is_not_a_change() {
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};
    let cases = [
        (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
        (EventKind::Access(AccessKind::Read), false),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            false,
        ),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            true,
        ),
        (EventKind::Modify(ModifyKind::Data(DataChange::Any)), true),
        (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
        (EventKind::Create(CreateKind::File), true),
        (EventKind::Remove(RemoveKind::File), true),
        (EventKind::Any, true),
    ];
    for (kind, changes) in cases {
        assert_eq!(may_change_content(&kind), changes, "{kind:?}");
    }
}

#[test]
fn a_bad_change_keeps_the_last_good_model_and_a_fix_clears_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, "services:\n  api:\n    join_token: t\n").unwrap();
    let metrics = Arc::new(Metrics::new());
    let source = MeshSource::load(&path, "seam.local", metrics.clone()).unwrap();
    let mut models = source.subscribe();

    std::fs::write(
        &path,
        "services:\n  api:\n    join_token: t\n    endpoints: [bad]\n",
    )
    .unwrap();
    source.reload();
    let error = source.last_error().unwrap();
    assert!(error.contains("mesh.yaml:4:"), "{error}");
    assert_eq!(source.current().version, 1);
    assert!(!models.has_changed().unwrap());
    assert!(
        metrics
            .encode()
            .contains("seam_mesh_reloads_total{result=\"rejected\"} 1")
    );

    std::fs::write(
        &path,
        "services:\n  api:\n    join_token: t\n    endpoints: [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    source.reload();
    assert_eq!(source.last_error(), None);
    assert!(models.has_changed().unwrap());
    let model = models.borrow_and_update().clone();
    assert_eq!(model.version, 2);
    assert_eq!(model.services()["api"].endpoints.len(), 1);

    // The same content again is not a new version.
    source.reload();
    assert!(!models.has_changed().unwrap());
}

#[test]
fn new_addresses_publish_a_version_and_the_same_ones_or_a_failure_do_not() {
    use crate::dns::Answer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    let file = "services:\n  api:\n    join_token: t\n    endpoints: [\"dns:api:4143\"]\n";
    std::fs::write(&path, file).unwrap();
    let source = MeshSource::load(&path, "seam.local", Arc::new(Metrics::new())).unwrap();
    let mut models = source.subscribe();
    let api = DnsName::parse("api").unwrap();
    assert_eq!(*source.names().borrow(), BTreeSet::from([api.clone()]));
    assert!(source.current().services()["api"].endpoints.is_empty());

    let ips =
        |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|ip| ip.parse().unwrap()).collect() };
    let apply = |answer: Answer| {
        if let Some(addresses) = answer.addresses() {
            source.resolved(vec![(api.clone(), addresses)]);
        }
    };
    let endpoints = |model: &MeshModel| -> Vec<String> {
        model.services()["api"]
            .endpoints
            .iter()
            .map(|endpoint| endpoint.address.to_string())
            .collect()
    };

    apply(Answer::Addresses {
        ips: ips(&["10.0.0.1", "10.0.0.2"]),
        ttl: None,
    });
    let model = models.borrow_and_update().clone();
    assert_eq!(model.version, 2);
    assert_eq!(endpoints(&model), ["10.0.0.1:4143", "10.0.0.2:4143"]);

    // The same answer again, and a failed lookup: nothing new, the addresses stay.
    apply(Answer::Addresses {
        ips: ips(&["10.0.0.1", "10.0.0.2"]),
        ttl: None,
    });
    apply(Answer::Failed {
        why: "timeout".into(),
    });
    assert!(!models.has_changed().unwrap());
    assert_eq!(
        endpoints(&source.current()),
        ["10.0.0.1:4143", "10.0.0.2:4143"]
    );

    // The name is gone (scaled to 0): no endpoints.
    apply(Answer::NoAddresses {
        why: "NXDOMAIN".into(),
    });
    let model = models.borrow_and_update().clone();
    assert_eq!(model.version, 3);
    assert!(endpoints(&model).is_empty());

    // A file edit keeps the addresses of the names it still uses and lists new ones.
    apply(Answer::Addresses {
        ips: ips(&["10.0.0.1"]),
        ttl: None,
    });
    std::fs::write(
        &path,
        format!(
            "{file}    timeout: 2s\n  web:\n    join_token: w\n    endpoints: [\"dns:web:80\"]\n"
        ),
    )
    .unwrap();
    source.reload();
    assert_eq!(source.last_error(), None);
    let model = models.borrow_and_update().clone();
    assert_eq!(model.version, 5);
    assert_eq!(endpoints(&model), ["10.0.0.1:4143"]);
    let web = DnsName::parse("web").unwrap();
    assert_eq!(*source.names().borrow(), BTreeSet::from([api.clone(), web]));
}
