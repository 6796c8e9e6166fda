use super::*;

#[test]
fn converts_faults_and_mirrors_and_refuses_bad_ones_with_a_reason() {
    let fault = fault_from_proto(v1::Fault {
        delay: Some(v1::FaultDelay {
            fixed_ms: 200,
            percent: 10.0,
        }),
        abort: Some(v1::FaultAbort {
            answer: Some(v1::fault_abort::Answer::HttpStatus(503)),
            percent: 0.5,
        }),
    })
    .unwrap();
    assert_eq!(
        fault.delay.unwrap().fixed,
        Duration::from_millis(200),
        "the delay"
    );
    assert_eq!(
        fault.abort.unwrap().answer,
        AbortAnswer::Http(StatusCode::SERVICE_UNAVAILABLE)
    );
    let mirror = mirror_from_proto(v1::Mirror {
        service: "shadow".into(),
        percent: 100.0,
        endpoints: vec![v1::Endpoint {
            address: "127.0.0.1:4143".into(),
            identity: "spiffe://seam.local/ns/default/sa/shadow".into(),
            plaintext: false,
        }],
    })
    .unwrap();
    assert_eq!(&*mirror.target.service, "shadow");
    assert_eq!(mirror.target.endpoints.len(), 1);

    let abort = |answer, percent| v1::Fault {
        delay: None,
        abort: Some(v1::FaultAbort { answer, percent }),
    };
    use v1::fault_abort::Answer::{GrpcStatus, HttpStatus};
    let bad_faults = [
        (abort(Some(HttpStatus(600)), 5.0), "not 200 to 599"),
        (abort(Some(HttpStatus(199)), 5.0), "not 200 to 599"),
        (abort(Some(GrpcStatus(0)), 5.0), "not 1 to 16"),
        (abort(Some(GrpcStatus(17)), 5.0), "not 1 to 16"),
        (abort(None, 5.0), "no status"),
        (
            abort(Some(HttpStatus(503)), 100.5),
            "fault.abort.percent 100.5",
        ),
        (
            abort(Some(HttpStatus(503)), f64::NAN),
            "fault.abort.percent NaN",
        ),
        (v1::Fault::default(), "neither delay nor abort"),
        (
            v1::Fault {
                delay: Some(v1::FaultDelay {
                    fixed_ms: 0,
                    percent: 5.0,
                }),
                abort: None,
            },
            "more than 0",
        ),
    ];
    for (fault, reason) in bad_faults {
        let err = fault_from_proto(fault).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }
    let bad_mirrors = [
        (
            v1::Mirror {
                service: "shadow".into(),
                percent: -1.0,
                endpoints: vec![],
            },
            "mirror.percent -1",
        ),
        (v1::Mirror::default(), "no service"),
        (
            v1::Mirror {
                service: "shadow".into(),
                percent: 5.0,
                endpoints: vec![v1::Endpoint {
                    address: "nowhere".into(),
                    identity: String::new(),
                    plaintext: false,
                }],
            },
            "not an IP:port",
        ),
    ];
    for (mirror, reason) in bad_mirrors {
        let err = mirror_from_proto(mirror).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }
}
