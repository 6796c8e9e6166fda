use prometheus_client::metrics::counter::Counter;

use super::*;

fn endpoint(port: u16, service: &str) -> Endpoint {
    Endpoint {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        identity: Some(SpiffeId::workload("seam.local", "default", service).unwrap()),
    }
}

#[tokio::test]
async fn first_use_subscribes_once_and_waits_for_the_answer() {
    let (subscribe, mut subscriptions) = mpsc::unbounded_channel();
    let directory = Arc::new(Directory::new(subscribe, 10));
    let waiting = {
        let directory = directory.clone();
        tokio::spawn(async move { directory.resolve("api", Duration::from_secs(30)).await })
    };
    assert_eq!(
        subscriptions.recv().await.unwrap(),
        SubscriptionChange::Subscribe("api".into())
    );
    directory.apply(
        "api",
        7,
        Resolution::Found(Arc::new(Service::new(
            "api".into(),
            vec![endpoint(1, "api")],
        ))),
    );
    match waiting.await.unwrap().unwrap() {
        Resolution::Found(backend) => assert_eq!(backend.name.as_ref(), "api"),
        other => panic!("expected the backend, got {other:?}"),
    }
    // Known now: answered from the snapshot, no second subscription.
    assert!(matches!(
        directory.resolve("api", Duration::ZERO).await.unwrap(),
        Resolution::Found(_)
    ));
    assert!(subscriptions.try_recv().is_err());
    assert_eq!(directory.describe()["api"]["version"], 7);
    assert_eq!(directory.endpoints(), vec![endpoint(1, "api")]);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_lookup_gives_up_after_the_wait() {
    let (subscribe, _subscriptions) = mpsc::unbounded_channel();
    let directory = Directory::new(subscribe, 10);
    let resolution = directory
        .resolve("api", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(matches!(resolution, Resolution::Pending));
}

#[tokio::test]
async fn the_number_of_tracked_services_is_bounded() {
    let (subscribe, _subscriptions) = mpsc::unbounded_channel();
    let directory = Directory::new(subscribe, 1);
    directory.apply("never-subscribed", 1, Resolution::NotFound);
    assert!(directory.authorities().is_empty());
    let _ = directory.resolve("a", Duration::ZERO).await.unwrap();
    assert_eq!(
        directory.resolve("b", Duration::ZERO).await.unwrap_err(),
        LookupError::TooManyServices(1)
    );
}

#[tokio::test]
async fn a_full_directory_counts_what_it_refuses() {
    let (subscribe, _subscriptions) = mpsc::unbounded_channel();
    let refused = Counter::default();
    let directory = Directory::new(subscribe, 2).with_refusal_counter(refused.clone());
    for authority in ["a", "b", "c", "d", "a"] {
        let _ = directory.resolve(authority, Duration::ZERO).await;
    }
    assert_eq!(refused.get(), 2, "c and d refused; a known");
}

fn found(name: &str) -> Resolution {
    Resolution::Found(Arc::new(Service::new(name.into(), vec![endpoint(1, name)])))
}

/// Every change sent so far.
fn drain(changes: &mut mpsc::UnboundedReceiver<SubscriptionChange>) -> Vec<SubscriptionChange> {
    std::iter::from_fn(|| changes.try_recv().ok()).collect()
}

#[tokio::test]
async fn the_sweep_forgets_only_authorities_unused_for_the_idle_time() {
    let (subscribe, mut changes) = mpsc::unbounded_channel();
    let directory = Directory::new(subscribe, 10);
    for authority in ["used", "idle", "missing"] {
        let _ = directory.resolve(authority, Duration::ZERO).await;
    }
    directory.apply("used", 1, found("used"));
    directory.apply("idle", 1, found("idle"));
    directory.apply("missing", 1, Resolution::NotFound);
    drain(&mut changes);
    for _ in 0..3 {
        assert!(
            directory.sweep(3).is_empty(),
            "nothing idle for 3 ticks yet"
        );
        let _ = directory.resolve("used", Duration::ZERO).await;
    }
    let mut forgotten = directory.sweep(3);
    forgotten.sort();
    assert_eq!(forgotten, ["idle", "missing"]);
    let mut sent = drain(&mut changes);
    sent.sort_by_key(|change| format!("{change:?}"));
    assert_eq!(
        sent,
        [
            SubscriptionChange::Unsubscribe("idle".into()),
            SubscriptionChange::Unsubscribe("missing".into()),
        ]
    );
    assert_eq!(directory.authorities(), ["used"]);
    assert!(!directory.is_answered("idle"));
}

#[tokio::test]
async fn a_forgotten_authority_is_subscribed_again_and_waits_for_its_answer() {
    let (subscribe, mut changes) = mpsc::unbounded_channel();
    let directory = Arc::new(Directory::new(subscribe, 10));
    let _ = directory.resolve("api", Duration::ZERO).await;
    directory.apply("api", 1, found("api"));
    assert_eq!(directory.sweep(0), ["api"]);
    drain(&mut changes);
    let waiting = {
        let directory = directory.clone();
        tokio::spawn(async move { directory.resolve("api", Duration::from_secs(30)).await })
    };
    assert_eq!(
        changes.recv().await,
        Some(SubscriptionChange::Subscribe("api".into()))
    );
    directory.apply("api", 2, found("api"));
    assert!(matches!(
        waiting.await.unwrap().unwrap(),
        Resolution::Found(_)
    ));
    assert_eq!(directory.describe()["api"]["version"], 2);
}

#[tokio::test]
async fn the_sweep_keeps_pinned_and_in_use_authorities() {
    let (subscribe, mut changes) = mpsc::unbounded_channel();
    let directory = Arc::new(Directory::new(subscribe, 10));
    directory.pin("policy").unwrap();
    for authority in ["held", "replaced", "waited"] {
        let _ = directory.resolve(authority, Duration::ZERO).await;
    }
    directory.apply("policy", 1, found("policy"));
    directory.apply("held", 1, found("held"));
    directory.apply("replaced", 1, found("replaced"));
    // Requests in flight hold the service they resolved, for "replaced" an older snapshot.
    let Resolution::Found(held) = directory.resolve("held", Duration::ZERO).await.unwrap() else {
        panic!("held is known")
    };
    let Resolution::Found(older) = directory.resolve("replaced", Duration::ZERO).await.unwrap()
    else {
        panic!("replaced is known")
    };
    directory.apply("replaced", 2, found("replaced"));
    // A first request still waits for its answer.
    let waiting = {
        let directory = directory.clone();
        tokio::spawn(async move { directory.resolve("waited", Duration::from_secs(30)).await })
    };
    while directory.entries.load()["waited"].answers.receiver_count() == 0 {
        tokio::task::yield_now().await;
    }
    drain(&mut changes);
    assert!(
        directory.sweep(0).is_empty(),
        "every one is pinned or in use"
    );

    drop((held, older));
    directory.apply("waited", 1, Resolution::NotFound);
    waiting.await.unwrap().unwrap();
    let mut forgotten = directory.sweep(0);
    forgotten.sort();
    assert_eq!(forgotten, ["held", "replaced", "waited"]);
    assert_eq!(directory.authorities(), ["policy"]);
}
