//! The CA Secret against a mock API server standing in for a real one (none can run on
//! this machine), with the real CA code; replicas share one Secret through `SharedSecret`.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use super::*;
use crate::ca::RotationPhase;
use crate::ca::follow::{FOLLOW_EVERY, follow_store};
use crate::kubernetes::api_mock::{self, ApiMock};

const PATH: &str = "/api/v1/namespaces/seam-system/secrets";

fn load(
    client: kube::Client,
) -> tokio::task::JoinHandle<Result<CertificateAuthority, CaSecretError>> {
    tokio::spawn(
        async move { load_or_create(client, "seam-system", "seam-ca", "seam.local").await },
    )
}

async fn expect(api: &mut ApiMock, method: Method, path: &str) -> api_mock::Call {
    let call = api.next().await;
    assert_eq!(call.method, method, "{}", call.path);
    assert_eq!(call.path.split('?').next().unwrap(), path);
    call
}

fn not_found(call: api_mock::Call) {
    call.fail(404, "NotFound", "secrets \"seam-ca\" not found");
}

/// A Secret as the API server returns it.
fn stored(object: &Value, resource_version: &str) -> Value {
    let mut object = object.clone();
    object["metadata"]["namespace"] = json!("seam-system");
    object["metadata"]["uid"] = json!("3c1a2b4d-0000-4000-8000-000000000001");
    object["metadata"]["resourceVersion"] = json!(resource_version);
    object
}

fn secret_state(object: &Value) -> CaState {
    let secret: Secret = serde_json::from_value(object.clone()).unwrap();
    state_of(&secret, "test").unwrap()
}

fn certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// First start: the Secret is created (Opaque, the directory's file names); returns it.
async fn first_start(api: &mut ApiMock, client: kube::Client) -> (CertificateAuthority, Value) {
    let loading = load(client);
    not_found(expect(api, Method::GET, &format!("{PATH}/seam-ca")).await);
    let create = expect(api, Method::POST, PATH).await;
    assert_eq!(create.body["type"], "Opaque");
    assert_eq!(create.body["metadata"]["name"], "seam-ca");
    let created = stored(&create.body, "1");
    create.echo(201, "1");
    (loading.await.unwrap().unwrap(), created)
}

#[tokio::test]
async fn the_secret_is_created_on_first_start_and_the_same_root_is_read_on_the_next() {
    let (client, mut api) = api_mock::client();
    let (ca, created) = first_start(&mut api, client).await;
    let state = secret_state(&created);
    assert_eq!(certificates(&state.bundle_pem), 1);
    assert!(state.key_pem.contains("PRIVATE KEY"));
    assert_eq!(state.next_key_pem, None);
    assert_eq!(ca.state(), state, "what is in force is what was stored");

    let (client, mut api) = api_mock::client();
    let restarted = load(client);
    expect(&mut api, Method::GET, &format!("{PATH}/seam-ca"))
        .await
        .reply(200, &created);
    let restarted = restarted.await.unwrap().unwrap();
    assert_eq!(restarted.trust_bundle(), ca.trust_bundle(), "the same root");
}

#[tokio::test]
async fn a_replica_that_loses_the_create_race_uses_the_winners_root() {
    let winner = CertificateAuthority::new_state("seam.local").unwrap();
    let winners_secret = stored(
        &serde_json::to_value(secret_of("seam-ca", &winner)).unwrap(),
        "7",
    );
    let (client, mut api) = api_mock::client();
    let loading = load(client);
    not_found(expect(&mut api, Method::GET, &format!("{PATH}/seam-ca")).await);
    expect(&mut api, Method::POST, PATH).await.fail(
        409,
        "AlreadyExists",
        "secrets \"seam-ca\" already exists",
    );
    expect(&mut api, Method::GET, &format!("{PATH}/seam-ca"))
        .await
        .reply(200, &winners_secret);
    let ca = loading.await.unwrap().unwrap();
    assert_eq!(ca.state(), winner);
}

#[tokio::test]
async fn a_rotation_step_replaces_the_secret_under_the_version_read_again_after_a_conflict() {
    let (client, mut api) = api_mock::client();
    let (ca, created) = first_start(&mut api, client).await;
    ca.introduce_root().unwrap();

    let secret_path = format!("{PATH}/seam-ca");
    expect(&mut api, Method::GET, &secret_path)
        .await
        .reply(200, &stored(&created, "1"));
    let conflicting = expect(&mut api, Method::PUT, &secret_path).await;
    assert_eq!(conflicting.body["metadata"]["resourceVersion"], "1");
    conflicting.fail(
        409,
        "Conflict",
        "Operation cannot be fulfilled on secrets \"seam-ca\": the object has been modified; please apply your changes to the latest version and try again",
    );
    expect(&mut api, Method::GET, &secret_path)
        .await
        .reply(200, &stored(&created, "2"));
    let replace = expect(&mut api, Method::PUT, &secret_path).await;
    assert_eq!(replace.body["metadata"]["resourceVersion"], "2");
    let written = secret_state(&replace.body);
    replace.echo(200, "3");
    assert_eq!(written, ca.state());
    assert_eq!(certificates(&written.bundle_pem), 2);
    assert!(
        written.next_key_pem.is_some(),
        "the introduced root's key is kept"
    );

    // A restart from what was written resumes the rotation where it stands.
    let (client, mut api) = api_mock::client();
    let restarted = load(client);
    let mut after = created.clone();
    after["data"] = serde_json::to_value(secret_of("seam-ca", &written)).unwrap()["data"].clone();
    expect(&mut api, Method::GET, &secret_path)
        .await
        .reply(200, &after);
    let restarted = restarted.await.unwrap().unwrap();
    assert_eq!(restarted.phase(), crate::ca::RotationPhase::Introduced);
    assert_eq!(restarted.trust_bundle(), ca.trust_bundle());
}

#[tokio::test]
async fn a_deleted_secret_is_created_again_with_the_state_in_force() {
    let (client, mut api) = api_mock::client();
    let (ca, _) = first_start(&mut api, client).await;
    ca.introduce_root().unwrap();
    not_found(expect(&mut api, Method::GET, &format!("{PATH}/seam-ca")).await);
    let create = expect(&mut api, Method::POST, PATH).await;
    assert_eq!(create.body["type"], "Opaque");
    assert_eq!(secret_state(&create.body), ca.state());
    create.echo(201, "9");
}

#[tokio::test]
async fn a_secret_without_the_key_is_refused_naming_the_secret_and_the_key() {
    let (client, mut api) = api_mock::client();
    let loading = load(client);
    let mut broken = serde_json::to_value(secret_of(
        "seam-ca",
        &CertificateAuthority::new_state("seam.local").unwrap(),
    ))
    .unwrap();
    broken["data"].as_object_mut().unwrap().remove("ca.key");
    expect(&mut api, Method::GET, &format!("{PATH}/seam-ca"))
        .await
        .reply(200, &stored(&broken, "4"));
    let err = loading.await.unwrap().err().unwrap().to_string();
    assert!(
        err.contains("the CA Secret seam-system/seam-ca has no \"ca.key\""),
        "{err}"
    );
}

/// One Secret as an API server keeps it, served to several replicas' mock clients.
#[derive(Clone, Default)]
struct SharedSecret {
    object: Arc<Mutex<Option<Value>>>,
}

impl SharedSecret {
    fn certificates(&self) -> usize {
        let object = self.object.lock();
        object
            .as_ref()
            .map_or(0, |object| certificates(&secret_state(object).bundle_pem))
    }

    fn create(&self, call: api_mock::Call) {
        let mut object = self.object.lock();
        if object.is_some() {
            return call.fail(409, "AlreadyExists", "secrets \"seam-ca\" already exists");
        }
        let created = stored(&call.body, "1");
        *object = Some(created.clone());
        call.reply(201, &created);
    }

    /// A replace, refused with 409 when made under a resourceVersion no longer current.
    fn replace(&self, call: api_mock::Call) {
        let mut object = self.object.lock();
        let Some(current) = object.as_ref() else {
            return not_found(call);
        };
        let version = &current["metadata"]["resourceVersion"];
        if call.body["metadata"]["resourceVersion"] != *version {
            return call.fail(409, "Conflict", "the object has been modified");
        }
        let next = version.as_str().unwrap().parse::<u64>().unwrap() + 1;
        let replaced = stored(&call.body, &next.to_string());
        *object = Some(replaced.clone());
        call.reply(200, &replaced);
    }
}

/// One control plane: its CA over the shared Secret, with its store follower running.
struct Replica {
    ca: Arc<CertificateAuthority>,
    /// GETs its client made (the writer's and the reader's).
    gets: Arc<AtomicUsize>,
    /// While true, its replaces wait unanswered, as a slow API server would leave them.
    hold_writes: watch::Sender<bool>,
    _tasks: [AbortOnDropHandle<()>; 2],
}

async fn replica(secret: &SharedSecret) -> Replica {
    let (client, api) = api_mock::client();
    let (hold_writes, held) = watch::channel(false);
    let gets = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(serve(api, secret.clone(), held, gets.clone()));
    let ca = Arc::new(
        load_or_create(client, "seam-system", "seam-ca", "seam.local")
            .await
            .unwrap(),
    );
    let follower = tokio::spawn(follow_store(ca.clone(), FOLLOW_EVERY));
    Replica {
        ca,
        gets,
        hold_writes,
        _tasks: [
            AbortOnDropHandle::new(follower),
            AbortOnDropHandle::new(server),
        ],
    }
}

/// Answers one replica's requests from `secret`.
async fn serve(
    mut api: ApiMock,
    secret: SharedSecret,
    held: watch::Receiver<bool>,
    gets: Arc<AtomicUsize>,
) {
    loop {
        let call = api.next().await;
        assert_eq!(
            call.path
                .split('?')
                .next()
                .unwrap()
                .trim_end_matches("/seam-ca"),
            PATH
        );
        match call.method {
            Method::GET => {
                gets.fetch_add(1, Ordering::SeqCst);
                let object = secret.object.lock().clone();
                match object {
                    Some(object) => call.reply(200, &object),
                    None => not_found(call),
                }
            }
            Method::POST => secret.create(call),
            Method::PUT => {
                let (secret, mut held) = (secret.clone(), held.clone());
                tokio::spawn(async move {
                    let _ = held.wait_for(|held| !held).await;
                    secret.replace(call);
                });
            }
            other => panic!("unexpected {other} {}", call.path),
        }
    }
}

/// Waits (bounded) until `done`, a few follower periods at most.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + FOLLOW_EVERY * 10;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rotation_step_on_one_replica_is_in_force_on_the_other_once_it_reads_the_secret() {
    let secret = SharedSecret::default();
    let first = replica(&secret).await;
    let second = replica(&secret).await;
    assert_eq!(
        first.ca.trust_bundle(),
        second.ca.trust_bundle(),
        "one root"
    );

    first.ca.introduce_root().unwrap();
    until("the second replica has the introduced root", || {
        second.ca.phase() == RotationPhase::Introduced
    })
    .await;
    assert_eq!(second.ca.trust_bundle(), first.ca.trust_bundle());
    assert_eq!(second.ca.trust_bundle().len(), 2);

    // And the other way round, for the next step.
    second.ca.promote_root().unwrap();
    until("the first replica signs with the new root", || {
        first.ca.phase() == RotationPhase::Promoted
    })
    .await;
    assert_eq!(first.ca.state(), second.ca.state());
    assert_eq!(first.ca.trust_bundle()[0], second.ca.trust_bundle()[0]);
}

#[tokio::test]
async fn our_own_step_is_never_undone_by_a_read_of_the_secret_before_it_is_written() {
    let secret = SharedSecret::default();
    let first = replica(&secret).await;
    let second = replica(&secret).await;
    first.hold_writes.send_replace(true);
    first.ca.introduce_root().unwrap();

    // The writer's GET, then at least two reads back, all answered with the old state:
    // the first was handled before the second was sent, and followed meanwhile.
    let before = first.gets.load(Ordering::SeqCst);
    until(
        "the first replica has read the old Secret back twice",
        || first.gets.load(Ordering::SeqCst) >= before + 3,
    )
    .await;
    assert_eq!(secret.certificates(), 1, "the write is still held");
    assert!(!first.ca.pick_up_stored().unwrap(), "nothing to pick up");
    assert_eq!(
        first.ca.phase(),
        RotationPhase::Introduced,
        "our step stands"
    );
    assert_eq!(second.ca.phase(), RotationPhase::Idle);

    first.hold_writes.send_replace(false);
    until("the second replica has the introduced root", || {
        second.ca.phase() == RotationPhase::Introduced
    })
    .await;
    assert_eq!(secret.certificates(), 2);
    assert_eq!(first.ca.phase(), RotationPhase::Introduced);
    assert_eq!(first.ca.trust_bundle(), second.ca.trust_bundle());
}

#[test]
fn the_state_never_shows_its_keys() {
    let state = CertificateAuthority::new_state("seam.local").unwrap();
    let shown = format!("{state:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("<redacted>"));
}
