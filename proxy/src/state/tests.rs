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
    assert_eq!(subscriptions.recv().await.unwrap(), "api");
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
