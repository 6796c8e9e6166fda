use super::*;

fn parse_text(text: &str) -> Result<MeshModel, MeshFileError> {
    parse(Path::new("/etc/seam/mesh.yaml"), text, "seam.local")
}

#[test]
fn parses_the_documented_example() {
    let model = parse_text(
        "trust_domain: seam.local\nservices:\n  api:\n    join_token: \"s3cret-api\"\n    endpoints: [\"127.0.0.1:24143\"]\n  web:\n    join_token: w\n",
    )
    .unwrap();
    let api = &model.services["api"];
    assert_eq!(api.endpoints.len(), 1);
    assert_eq!(api.endpoints[0].address, "127.0.0.1:24143".parse().unwrap());
    assert_eq!(
        api.endpoints[0].identity.as_str(),
        "spiffe://seam.local/ns/default/sa/api"
    );
    assert!(api.join_token.matches("s3cret-api"));
    assert!(model.services["web"].endpoints.is_empty());
}

#[test]
fn refusals_name_file_line_and_reason() {
    let cases: &[(&str, u64, &str)] = &[
        (
            "services:\n  api:\n    join_token: t\n    endpoints: [nope]\n",
            4,
            "endpoint \"nope\" of service \"api\" is not an IP:port",
        ),
        (
            "services:\n  api:\n    join_token: \"\"\n",
            3,
            "empty join_token",
        ),
        (
            "services:\n  API:\n    join_token: t\n",
            3,
            "service name \"API\" may hold only lowercase",
        ),
        (
            "trust_domain: other.local\nservices: {}\n",
            1,
            "differs from the control plane's trust domain",
        ),
        (
            "services:\n  api:\n    join_token: t\n    endpoint: []\n",
            4,
            "endpoint",
        ),
        (
            "services:\n  api:\n    join_token: t\n    endpoints: [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
            4,
            "listed twice",
        ),
        ("services:\n  api: [unclosed\n", 2, ""),
        ("services:\n  api:\n    endpoints: []\n", 3, "join_token"),
    ];
    for (text, line, reason) in cases {
        let err = parse_text(text).unwrap_err();
        assert_eq!(err.line, *line, "{text:?}: {err}");
        assert!(err.reason.contains(reason), "{text:?}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("/etc/seam/mesh.yaml:{line}:")),
            "{err}"
        );
    }
}

#[test]
fn an_empty_file_is_refused() {
    let err = parse_text("  \n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/seam/mesh.yaml: the mesh file is empty"
    );
}

#[test]
fn an_unreadable_file_is_refused_with_its_path() {
    let err = load(Path::new("/nonexistent/mesh.yaml"), "seam.local").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/mesh.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn syntax_errors_name_the_position_once() {
    let err = parse_text("services:\n  api: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(!err.contains(" at line "), "{err}");
    assert_eq!(
        reason_without_position("bad thing at line 5, column 3"),
        "bad thing"
    );
    assert_eq!(
        reason_without_position("at line 5 is fine"),
        "at line 5 is fine"
    );
}

#[test]
fn allow_lists_take_service_names_and_spiffe_ids() {
    let model = parse_text(
        "services:\n  api:\n    join_token: t\n    allow: [web, \"spiffe://seam.local/ns/prod/sa/billing\", web]\n    allow_plaintext: true\n  web:\n    join_token: w\n",
    )
    .unwrap();
    let api = &model.services["api"].authorization;
    let allowed: Vec<&str> = api.allow.iter().flatten().map(|id| id.as_str()).collect();
    assert_eq!(
        allowed,
        [
            "spiffe://seam.local/ns/default/sa/web",
            "spiffe://seam.local/ns/prod/sa/billing"
        ]
    );
    assert!(api.allow_plaintext);
    let web = &model.services["web"].authorization;
    assert_eq!(web.allow, None, "no allow list means any mesh identity");
    assert!(
        !web.allow_plaintext,
        "plaintext is refused unless asked for"
    );

    let empty = parse_text("services:\n  api:\n    join_token: t\n    allow: []\n").unwrap();
    assert_eq!(empty.services["api"].authorization.allow, Some(vec![]));
}

#[test]
fn allow_entries_that_can_never_match_are_refused_with_their_line() {
    let cases: &[(&str, u64, &str)] = &[
        (
            "services:\n  api:\n    join_token: t\n    allow: [wbe]\n",
            4,
            "names \"wbe\", which is neither a service of this file nor a spiffe:// id",
        ),
        (
            "services:\n  api:\n    join_token: t\n    allow:\n      - \"spiffe://other.local/ns/x/sa/y\"\n",
            5,
            "outside trust domain \"seam.local\"",
        ),
        (
            "services:\n  api:\n    join_token: t\n    allow: [\"spiffe://seam.local/ns//sa\"]\n",
            4,
            "invalid path",
        ),
    ];
    for (text, line, reason) in cases {
        let err = parse_text(text).unwrap_err();
        assert_eq!(err.line, *line, "{err}");
        assert!(err.reason.contains(reason), "{err}");
    }
}
