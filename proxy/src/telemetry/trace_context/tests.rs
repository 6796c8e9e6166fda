use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn trace() -> u128 {
    u128::from_str_radix(TRACE, 16).unwrap()
}

fn span() -> u64 {
    u64::from_str_radix(SPAN, 16).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[test]
fn traceparent_table() {
    let cases: &[(&str, Option<bool>)] = &[
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some(true),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            Some(false),
        ),
        // Flags other than "sampled" are ignored; a later version may add fields.
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            Some(true),
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            Some(true),
        ),
        // Invalid: uppercase hex, version ff, extra field in 00, zero ids, short ids,
        // non-hex, missing parts.
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            None,
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            None,
        ),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            None,
        ),
        ("", None),
        // Fields are read at fixed positions: a later version without extra fields is
        // fine; a misplaced dash, a non-hex version or a glued suffix is not.
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some(true),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
            None,
        ),
        (
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            None,
        ),
    ];
    for (value, sampled) in cases {
        let parsed = parse_traceparent(value.as_bytes());
        assert_eq!(parsed.as_ref().and_then(|c| c.sampled), *sampled, "{value}");
        if let Some(context) = parsed {
            assert_eq!(context.trace_id, trace(), "{value}");
            assert_eq!(context.span_id, span(), "{value}");
        }
    }
}

#[test]
fn b3_single_table() {
    type Case = (&'static str, Option<(u128, Option<bool>)>);
    let cases: &[Case] = &[
        (
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            Some((trace(), Some(true))),
        ),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            Some((trace(), Some(false))),
        ),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-d",
            Some((trace(), Some(true))),
        ),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            Some((trace(), None)),
        ),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90",
            Some((trace(), Some(true))),
        ),
        // A 64-bit trace id is widened with zeros on the left.
        (
            "a3ce929d0e0e4736-00f067aa0ba902b7-1",
            Some((0xa3ce929d0e0e4736, Some(true))),
        ),
        ("0", None),
        ("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-x", None),
        ("4bf92f3577b34da6a3ce929d0e0e4736", None),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90-9",
            None,
        ),
    ];
    for (value, expected) in cases {
        let parsed = parse_b3_single(value).map(|c| (c.trace_id, c.sampled));
        assert_eq!(parsed, *expected, "{value}");
    }
}

#[test]
fn b3_multi_reads_sampling_and_debug_flags() {
    let base = [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)];
    type Case = (
        &'static [(&'static str, &'static str)],
        Option<Option<bool>>,
    );
    let cases: &[Case] = &[
        (&[], Some(None)),
        (&[("x-b3-sampled", "1")], Some(Some(true))),
        (&[("x-b3-sampled", "0")], Some(Some(false))),
        (
            &[("x-b3-sampled", "0"), ("x-b3-flags", "1")],
            Some(Some(true)),
        ),
        (&[("x-b3-sampled", "maybe")], None),
    ];
    for (extra, expected) in cases {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        let parsed = parse_b3_multi(&headers(&pairs)).map(|c| c.sampled);
        assert_eq!(parsed, *expected, "{extra:?}");
    }
    assert_eq!(parse_b3_multi(&headers(&[("x-b3-traceid", TRACE)])), None);
}

#[test]
fn extract_honours_the_enabled_formats_and_prefers_w3c() {
    let w3c = format!("00-{TRACE}-{SPAN}-01");
    let other_trace = "11111111111111111111111111111111";
    let b3 = format!("{other_trace}-{SPAN}-0");
    let both = headers(&[
        ("traceparent", &w3c),
        ("tracestate", "vendor=1"),
        ("b3", &b3),
    ]);
    let only_w3c: Propagation = "w3c".parse().unwrap();
    let only_b3: Propagation = "b3".parse().unwrap();
    let w3c_and_b3: Propagation = "w3c,b3".parse().unwrap();

    let context = extract(&both, only_w3c).unwrap();
    assert_eq!(context.trace_id, trace());
    assert_eq!(context.tracestate.unwrap(), "vendor=1");
    assert_eq!(extract(&both, w3c_and_b3).unwrap().trace_id, trace());
    let context = extract(&both, only_b3).unwrap();
    assert_eq!(context.trace_id_hex(), other_trace);
    assert_eq!(context.sampled, Some(false));
    assert_eq!(context.tracestate, None);

    // B3 is not read unless asked for; a broken traceparent falls through to B3.
    assert_eq!(extract(&headers(&[("b3", &b3)]), only_w3c), None);
    let broken = headers(&[("traceparent", "garbage"), ("b3", &b3)]);
    assert_eq!(
        extract(&broken, w3c_and_b3).unwrap().trace_id_hex(),
        other_trace
    );
    assert_eq!(extract(&HeaderMap::new(), w3c_and_b3), None);
}

#[test]
fn propagation_flag_parses_and_rejects_unknown_formats() {
    assert_eq!(
        "w3c".parse(),
        Ok(Propagation {
            w3c: true,
            b3: false
        })
    );
    assert_eq!(
        "b3".parse(),
        Ok(Propagation {
            w3c: false,
            b3: true
        })
    );
    assert_eq!(
        " w3c , B3 ".parse(),
        Ok(Propagation {
            w3c: true,
            b3: true
        })
    );
    let error = "w3c,jaeger".parse::<Propagation>().unwrap_err();
    assert!(error.to_string().contains("\"jaeger\""), "{error}");
    assert_eq!(
        Propagation {
            w3c: true,
            b3: true
        }
        .to_string(),
        "w3c,b3"
    );
}

#[test]
fn inject_replaces_the_enabled_formats_only() {
    let ours = SpanContext {
        trace_id: trace(),
        span_id: 0x1122_3344_5566_7788,
        sampled: Some(true),
        tracestate: Some(HeaderValue::from_static("vendor=1")),
    };
    let mut map = headers(&[
        (
            "traceparent",
            "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-00",
        ),
        ("tracestate", "stale=1"),
        ("x-b3-parentspanid", "ffffffffffffffff"),
    ]);
    inject(&mut map, "w3c".parse().unwrap(), &ours);
    assert_eq!(
        map["traceparent"],
        format!("00-{TRACE}-1122334455667788-01")
    );
    assert_eq!(map["tracestate"], "vendor=1");
    assert_eq!(map["x-b3-parentspanid"], "ffffffffffffffff", "b3 untouched");
    assert!(
        map["traceparent"].is_sensitive(),
        "a value new on every request stays out of the HPACK tables"
    );

    inject(
        &mut map,
        "b3".parse().unwrap(),
        &SpanContext {
            sampled: Some(false),
            ..ours
        },
    );
    assert_eq!(map["b3"], format!("{TRACE}-1122334455667788-0"));
    assert_eq!(map["x-b3-traceid"], TRACE);
    assert_eq!(map["x-b3-spanid"], "1122334455667788");
    assert_eq!(map["x-b3-sampled"], "0");
    for unique in ["b3", "x-b3-traceid", "x-b3-spanid"] {
        assert!(
            map[unique].is_sensitive(),
            "{unique} is new on every request"
        );
    }
    assert!(
        map.get("x-b3-parentspanid").is_none(),
        "stale parent removed"
    );
    // What we write, we read back.
    let back = extract(&map, "b3".parse().unwrap()).unwrap();
    assert_eq!(
        (back.trace_id, back.span_id),
        (trace(), 0x1122_3344_5566_7788)
    );
}

#[test]
fn sampling_follows_the_parent_else_the_ratio() {
    let parent = |sampled| SpanContext {
        trace_id: trace(),
        span_id: span(),
        sampled,
        tracestate: None,
    };
    assert!(sample(Some(&parent(Some(true))), trace(), 0.0));
    assert!(!sample(Some(&parent(Some(false))), trace(), 1.0));
    assert!(sample(Some(&parent(None)), trace(), 1.0));
    assert!(!sample(None, trace(), 0.0));
    // Low bits decide: ids below half the range are kept at ratio 0.5.
    assert!(sample(None, 0x0000_0000_0000_0000_0000_0000_0000_0002, 0.5));
    assert!(!sample(
        None,
        0x0000_0000_0000_0000_ffff_ffff_ffff_fffe,
        0.5
    ));
    let kept = (1u128..=1000)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
        .filter(|id| sample(None, *id, 0.25))
        .count();
    assert!(
        (150..350).contains(&kept),
        "kept {kept} of 1000 at ratio 0.25"
    );
}
