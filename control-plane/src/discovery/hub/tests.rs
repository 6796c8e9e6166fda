//! The hub resolves once per version, shares one update among watchers, and wakes only
//! the watchers of what changed.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Hub, Watch};
use crate::discovery::outbox::{Next, Outbox};
use crate::mesh_file;
use crate::model::MeshModel;

fn model(api_endpoint: &str, version: u64) -> Arc<MeshModel> {
    let text = format!(
        "services:\n  api:\n    join_token: a\n    endpoints: [\"{api_endpoint}\"]\n  \
         web:\n    join_token: w\n    endpoints: [\"10.0.0.9:8080\"]\n"
    );
    let mut model = mesh_file::parse(std::path::Path::new("mesh.yaml"), &text, "seam.local")
        .expect("a valid mesh file");
    model.version = version;
    Arc::new(model)
}

fn watch(authority: &str) -> Watch {
    Watch {
        authority: authority.to_owned(),
        namespace: Some("default".to_owned()),
    }
}

fn marked(outbox: &Outbox) -> Vec<String> {
    match outbox.take() {
        Next::Send(updates) => updates
            .iter()
            .map(|update| update.authority.clone())
            .collect(),
        Next::Wait => Vec::new(),
        Next::Fail(_) | Next::End => panic!("the outbox is not closed"),
    }
}

#[test]
fn a_change_marks_only_the_watchers_of_what_changed_and_they_share_one_update() {
    let (models, latest) = watch::channel(model("10.0.0.1:8080", 1));
    let hub = Hub::new(latest);
    let (first, second, web_only) = (
        Arc::new(Outbox::new()),
        Arc::new(Outbox::new()),
        Arc::new(Outbox::new()),
    );
    hub.subscribe(&watch("api"), (1, first.clone()));
    hub.subscribe(&watch("web"), (1, first.clone()));
    hub.subscribe(&watch("api"), (2, second.clone()));
    hub.subscribe(&watch("web"), (3, web_only.clone()));
    assert_eq!(marked(&first), ["api", "web"], "answered at once");
    assert_eq!(marked(&second), ["api"]);
    assert_eq!(marked(&web_only), ["web"]);
    assert_eq!(hub.watched(), 2);

    let before = hub.current(&watch("api")).expect("watched");
    assert_eq!(
        hub.apply(publish(&models, model("10.0.0.2:8080", 2))),
        1,
        "only api changed"
    );
    assert_eq!(marked(&first), ["api"]);
    assert_eq!(marked(&second), ["api"]);
    assert!(marked(&web_only).is_empty(), "web's watcher is not woken");
    let after = hub.current(&watch("api")).expect("watched");
    assert_eq!(after.version, 2);
    assert_ne!(before, after);
    assert!(
        Arc::ptr_eq(&after, &hub.current(&watch("api")).unwrap()),
        "every watcher is sent the one update built for the version"
    );

    // The same services in a new version change nothing.
    assert_eq!(hub.apply(publish(&models, model("10.0.0.2:8080", 3))), 0);
    assert!(marked(&first).is_empty());
}

#[test]
fn a_new_subscription_gets_the_version_in_force_and_the_last_watcher_leaving_forgets_it() {
    let (models, latest) = watch::channel(model("10.0.0.1:8080", 1));
    let hub = Hub::new(latest);
    let outbox = Arc::new(Outbox::new());
    hub.subscribe(&watch("api"), (1, outbox.clone()));
    hub.apply(publish(&models, model("10.0.0.1:8080", 5)));
    hub.subscribe(&watch("api"), (2, Arc::new(Outbox::new())));
    assert_eq!(hub.current(&watch("api")).unwrap().version, 5);
    hub.unsubscribe(&watch("api"), 1);
    assert_eq!(hub.watched(), 1);
    hub.unsubscribe(&watch("api"), 2);
    assert_eq!(hub.watched(), 0, "nobody watches api: forgotten");
    assert!(hub.current(&watch("api")).is_none());
}

/// Makes `model` the one in force and returns it, for the hub to apply.
fn publish(models: &watch::Sender<Arc<MeshModel>>, model: Arc<MeshModel>) -> Arc<MeshModel> {
    models.send_replace(model.clone());
    model
}

#[test]
fn a_subscription_before_the_hub_applied_a_change_is_answered_from_the_model_in_force() {
    let (models, latest) = watch::channel(model("10.0.0.1:8080", 1));
    let hub = Hub::new(latest);
    let early = Arc::new(Outbox::new());
    hub.subscribe(&watch("api"), (1, early.clone()));
    assert_eq!(marked(&early), ["api"]);
    // Published, not applied yet (a pass is running): a new watcher gets the new state, and
    // the earlier watcher is told at the same time.
    models.send_replace(model("10.0.0.2:8080", 2));
    let late = Arc::new(Outbox::new());
    hub.subscribe(&watch("api"), (2, late.clone()));
    let update = hub.current(&watch("api")).unwrap();
    assert_eq!(update.version, 2);
    assert_eq!(marked(&late), ["api"]);
    assert_eq!(marked(&early), ["api"]);
    // Applying it afterwards changes nothing more.
    assert_eq!(hub.apply(models.borrow().clone()), 0);
    assert!(marked(&early).is_empty());
}
