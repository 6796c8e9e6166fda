use std::fs;
use std::path::Path;

use super::*;

const COMPOSE: &str = "\
services:
  web:
    image: nginx
    ports: ['8080:80']
    depends_on: [api]
  api:
    build: ./api
    expose: ['9000']
    env_file: api.env
  db:
    image: postgres:16
    volumes: ['./data:/var/lib/postgresql/data']
    expose: ['5432']
";

fn args(compose: &Path, output: Option<&Path>) -> InjectArgs {
    InjectArgs {
        compose: Some(compose.to_owned()),
        filename: None,
        skip: Vec::new(),
        profile: Profile::Transparent,
        output: output.map(Path::to_owned),
        image: crate::injector::DEFAULT_IMAGE.to_owned(),
        control_plane: crate::injector::DEFAULT_CONTROL_PLANE.to_owned(),
        native_sidecar: true,
    }
}

fn written(layout: &output::Layout) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![layout.compose.clone(), layout.mesh_file.clone()];
    let mut secrets: Vec<_> = fs::read_dir(&layout.secrets)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    secrets.sort();
    files.extend(secrets);
    files
        .into_iter()
        .map(|path| (path.display().to_string(), fs::read(&path).unwrap()))
        .collect()
}

#[test]
fn a_second_run_and_a_run_on_the_output_write_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docker-compose.yml");
    fs::write(&input, COMPOSE).unwrap();

    let layout = inject(&args(&input, None)).unwrap();
    assert_eq!(layout.compose, dir.path().join("docker-compose.seam.yml"));
    let first = written(&layout);
    assert_eq!(first.len(), 5, "compose, mesh file, three tokens");
    assert_eq!(
        fs::read_to_string(&input).unwrap(),
        COMPOSE,
        "the input is left alone"
    );

    inject(&args(&input, None)).unwrap();
    assert_eq!(written(&layout), first, "a second run on the input");
    inject(&args(&layout.compose, None)).unwrap();
    assert_eq!(written(&layout), first, "a run on its own output");
}

#[test]
fn the_output_reads_back_as_the_same_document() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("compose.yaml");
    fs::write(&input, COMPOSE).unwrap();
    let target = dir.path().join("meshed.yml");
    let layout = inject(&args(&input, Some(&target))).unwrap();
    assert_eq!(layout.compose, target);
    let text = fs::read_to_string(&target).unwrap();
    let planned = plan::plan(
        &compose::parse(&input, COMPOSE).unwrap().document,
        &plan::Options {
            skip: &[],
            profile: Profile::Transparent,
        },
    )
    .unwrap();
    assert_eq!(
        compose::parse(&target, &text).unwrap().document,
        planned.compose
    );
    assert!(text.contains("env_file: api.env"), "{text}");
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docker-compose.yml");
    fs::write(&input, "services:\n  api:\n    network_mode: host\n").unwrap();
    let error = inject(&args(&input, None)).unwrap_err();
    let message = seam_proto::report::error_chain(error.as_ref());
    assert!(
        message.starts_with(&format!(
            "{}: cannot mesh: service \"api\": network_mode is host",
            input.display()
        )),
        "{message}"
    );
}

#[test]
fn inject_takes_a_compose_file_or_kubernetes_yaml_but_not_both() {
    use clap::Parser as _;
    let parse = |args: &[&str]| {
        crate::ctl::Cli::try_parse_from([&["seamctl", "inject"], args].concat()).map(
            |cli| match cli.command {
                crate::ctl::Command::Inject(args) => args,
                other => panic!("{other:?}"),
            },
        )
    };
    let kube = parse(&["-f", "-", "--native-sidecar=false", "--image", "r/seam:1"]).unwrap();
    assert_eq!(kube.filename.as_deref(), Some("-"));
    let settings = kube.settings();
    assert!(!settings.native_sidecar);
    assert_eq!(settings.image, "r/seam:1");
    assert!(
        parse(&["--compose", "docker-compose.yml"])
            .unwrap()
            .compose
            .is_some()
    );
    assert!(parse(&[]).is_err(), "one input is required");
    assert!(parse(&["--compose", "c.yml", "-f", "k.yaml"]).is_err());
    assert!(
        parse(&["-f", "k.yaml", "--skip", "db"]).is_err(),
        "--skip is for compose"
    );
}
