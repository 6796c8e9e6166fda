use super::*;

/// One proxy's exposition: `requests` (status → count) and a latency histogram with
/// cumulative counts over the bounds 0.001, 0.01, 0.1, +Inf.
fn exposition(
    direction: &str,
    service: &str,
    requests: &[(u16, f64)],
    buckets: [f64; 4],
) -> String {
    let mut text =
        String::from("# HELP seam_requests_total x\n# TYPE seam_requests_total counter\n");
    for (status, count) in requests {
        text.push_str(&format!(
            "seam_requests_total{{direction=\"{direction}\",service=\"{service}\",route=\"default\",status=\"{status}\",grpc_status=\"\",tls=\"true\",peer=\"spiffe://seam.test/ns/default/sa/x\"}} {count}\n"
        ));
    }
    for (le, count) in ["0.001", "0.01", "0.1", "+Inf"].iter().zip(buckets) {
        text.push_str(&format!(
            "seam_request_duration_seconds_bucket{{direction=\"{direction}\",service=\"{service}\",route=\"default\",le=\"{le}\"}} {count}\n"
        ));
    }
    text
}

#[test]
fn parses_samples_with_and_without_labels() {
    let sample = parse_sample(r#"seam_x_total{a="1",b="with \"quotes\", commas"} 42"#).unwrap();
    assert_eq!(sample.name, "seam_x_total");
    assert_eq!(
        sample.labels,
        [
            ("a".into(), "1".into()),
            ("b".into(), "with \"quotes\", commas".into())
        ]
    );
    assert_eq!(sample.value, 42.0);
    assert_eq!(parse_sample("seam_up 1").unwrap().value, 1.0);
    assert_eq!(
        parse_sample(r#"seam_b{le="+Inf"} 3"#).unwrap().labels[0].1,
        "+Inf"
    );
    assert_eq!(parse_sample("# HELP seam_up x"), None);
    assert_eq!(parse_sample(r#"seam_b{le="1} 3"#), None);
}

#[test]
fn quantiles_interpolate_inside_buckets() {
    // 100 requests: 50 under 1 ms, 40 more under 10 ms, 10 more under 100 ms.
    let buckets = [
        (0.001, 50.0),
        (0.01, 90.0),
        (0.1, 100.0),
        (f64::INFINITY, 100.0),
    ];
    let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
    assert_eq!(ms(quantile(&buckets, 0.5)), Some(1.0));
    assert_eq!(ms(quantile(&buckets, 0.7)), Some(5.5));
    assert_eq!(ms(quantile(&buckets, 0.95)), Some(55.0));
    // In the +Inf bucket: the highest finite bound.
    let overflow = [(0.001, 1.0), (f64::INFINITY, 10.0)];
    assert_eq!(ms(quantile(&overflow, 0.99)), Some(1.0));
    assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
    assert_eq!(quantile(&[], 0.5), None);
}

#[test]
fn two_snapshots_give_rates_per_service_and_per_edge() {
    let mut before = Snapshot::default();
    before.add_proxy(
        "a",
        &exposition("outbound", "b", &[(200, 10.0)], [10.0, 10.0, 10.0, 10.0]),
    );
    before.add_proxy(
        "b",
        &exposition("inbound", "b", &[(200, 10.0)], [10.0, 10.0, 10.0, 10.0]),
    );
    let mut after = Snapshot::default();
    // 20 more requests out of a, 2 of them 503s; b saw the 18 that got through.
    after.add_proxy(
        "a",
        &exposition(
            "outbound",
            "b",
            &[(200, 28.0), (503, 2.0)],
            [20.0, 28.0, 30.0, 30.0],
        ),
    );
    after.add_proxy(
        "b",
        &exposition("inbound", "b", &[(200, 28.0)], [28.0, 28.0, 28.0, 28.0]),
    );
    let rows = compare(&before, &after, Duration::from_secs(2));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let service = rows
        .iter()
        .find(|r| r.key == RowKey::Service("b".into()))
        .unwrap();
    assert_eq!(service.success_rate, Some(1.0));
    assert_eq!(service.requests_per_second, 9.0);
    let edge = rows
        .iter()
        .find(|r| {
            r.key
                == RowKey::Edge {
                    caller: "a".into(),
                    callee: "b".into(),
                }
        })
        .unwrap();
    assert_eq!(edge.success_rate, Some(0.9));
    assert_eq!(edge.requests_per_second, 10.0);
    // Of the 20 new: 10 under 1 ms, 8 under 10 ms, 2 under 100 ms.
    assert_eq!(edge.p50, Some(Duration::from_secs_f64(0.001)));
    assert!(edge.p99.unwrap() > Duration::from_millis(10), "{edge:?}");

    let table = render(&rows);
    assert!(table.contains("SERVICE"), "{table}");
    let service_line = table.lines().find(|line| line.starts_with("b ")).unwrap();
    assert!(
        service_line.contains("100.00%") && service_line.contains("9.0"),
        "{table}"
    );
    let edge_line = table
        .lines()
        .find(|line| line.starts_with("a → b"))
        .unwrap();
    assert!(
        edge_line.contains("90.00%") && edge_line.contains("10.0"),
        "{table}"
    );
}

#[test]
fn a_restarted_proxy_counts_from_zero_and_grpc_errors_fail() {
    let mut before = Snapshot::default();
    before.add_proxy(
        "b",
        &exposition("inbound", "b", &[(200, 100.0)], [100.0; 4]),
    );
    let mut after = Snapshot::default();
    after.add_proxy(
        "b",
        &format!(
            "{}seam_requests_total{{direction=\"inbound\",service=\"b\",status=\"200\",grpc_status=\"14\"}} 1\n",
            exposition("inbound", "b", &[(200, 3.0)], [4.0; 4])
        ),
    );
    let rows = compare(&before, &after, Duration::from_secs(1));
    assert_eq!(rows[0].requests_per_second, 4.0);
    assert_eq!(rows[0].success_rate, Some(0.75));
    assert!(render(&[]).contains("(no traffic yet)"));
}

#[test]
fn a_status_class_or_an_unregistered_code_counts_as_it_should() {
    let request = |status: &str, count: u32| {
        format!(
            "seam_requests_total{{direction=\"inbound\",service=\"b\",status=\"{status}\",grpc_status=\"\"}} {count}\n"
        )
    };
    let mut before = Snapshot::default();
    before.add_proxy("b", &exposition("inbound", "b", &[], [0.0; 4]));
    let mut after = Snapshot::default();
    after.add_proxy(
        "b",
        &format!(
            "{}{}{}{}",
            exposition("inbound", "b", &[(200, 5.0)], [10.0; 4]),
            request("4xx", 2),
            request("5xx", 2),
            request("other", 1)
        ),
    );
    let rows = compare(&before, &after, Duration::from_secs(1));
    assert_eq!(rows[0].requests_per_second, 10.0);
    // 200s and a 4xx class succeed (as 404 does); a 5xx class and `other` fail.
    assert_eq!(rows[0].success_rate, Some(0.7));
}
