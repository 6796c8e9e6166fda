//! `seamctl inject --compose` on a compose project not written for Seam
//! (tests/fixtures/foreign-compose: web, api, a worker, Redis), run with the real
//! docker-compose and the Seam image: the meshed project comes up, web answers on its
//! published port with what it got from api through the mesh, the worker's calls to api
//! and to Redis succeed, `seamctl verify` shows web → api, worker → api and worker → db
//! as mTLS, and api, restarted, is reached through the mesh again. The one plaintext edge
//! is the test's own requests to web's published port, from outside the mesh;
//! `--require-mtls` counts exactly that one. Needs root, docker, docker-compose, and
//! Debian's busybox-static and redis-server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use seam_control_plane::launch;
use seam_tests::compose;
use seam_tests::foreign_compose::{self, Project};
use seam_tests::wait;
use tokio::process::Command;

/// What api serves, which web passes on.
const ORDER: &str = "rocket skates";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_foreign_project_comes_up_and_its_traffic_is_mtls() -> anyhow::Result<()> {
    let started = Instant::now();
    let image = compose::image()?;
    foreign_compose::fixture_images().await?;
    let seamctl = launch::binary_path("seamctl")?;

    let dir = tempfile::tempdir()?;
    let project_dir = dir.path().join("shop");
    foreign_compose::copy_tree(&foreign_compose::fixture_dir(), &project_dir)?;
    let original = project_dir.join("docker-compose.yml");
    foreign_compose::run(
        Command::new(&seamctl)
            .args(["inject", "--compose"])
            .arg(&original),
    )
    .await?;
    let meshed = project_dir.join("docker-compose.seam.yml");
    let written = std::fs::read(&meshed)?;
    foreign_compose::run(
        Command::new(&seamctl)
            .args(["inject", "--compose"])
            .arg(&meshed),
    )
    .await?;
    assert_eq!(
        std::fs::read(&meshed)?,
        written,
        "inject on its own output changes nothing"
    );

    let web_port = compose::free_port()?;
    let admin_port = compose::free_port()?;
    let state = dir.path().join("state");
    let project = Project::up(
        &meshed,
        &[
            ("SEAM_IMAGE", image),
            ("WEB_PORT", web_port.to_string()),
            ("SEAM_ADMIN_PORT", admin_port.to_string()),
            ("SEAM_STATE_DIR", state.display().to_string()),
        ],
    )
    .await?;
    let up = started.elapsed();

    let web = SocketAddr::from(([127, 0, 0, 1], web_port));
    let page = orders_from_web(web, Duration::from_secs(90)).await?;
    assert!(page.contains("anvil"), "{page}");

    wait::until(
        "the worker's calls to api and Redis succeed",
        Duration::from_secs(60),
        || {
            let project = &project;
            async move {
                let logs = project.logs("worker").await?;
                let synced = logs
                    .lines()
                    .filter(|line| line.contains("sync api=ok redis=:"))
                    .count();
                if synced < 2 {
                    bail!(
                        "{synced} good syncs so far; the worker's last lines: {}",
                        tail(&logs)
                    );
                }
                Ok(())
            }
        },
    )
    .await?;

    let admin = format!("127.0.0.1:{admin_port}");
    let table = wait::until(
        "verify lists the three edges",
        Duration::from_secs(30),
        || {
            let (seamctl, admin) = (&seamctl, &admin);
            async move {
                let output = Command::new(seamctl)
                    .args(["verify", "--admin", admin])
                    .output()
                    .await
                    .context("cannot run seamctl verify")?;
                let table = String::from_utf8_lossy(&output.stdout).into_owned();
                for (caller, callee) in [("web", "api"), ("worker", "api"), ("worker", "db")] {
                    if edge(&table, caller, callee).is_none() {
                        bail!("no {caller} → {callee} edge yet:\n{table}");
                    }
                }
                Ok(table)
            }
        },
    )
    .await?;
    for (caller, callee) in [("web", "api"), ("worker", "api"), ("worker", "db")] {
        assert_eq!(
            edge(&table, caller, callee).as_deref(),
            Some("mTLS"),
            "{caller} → {callee}:\n{table}"
        );
    }
    for row in table.lines().filter(|row| row.contains("PLAINTEXT")) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..3],
            ["(unauthenticated)", "web", "PLAINTEXT"],
            "only the test's requests to web's published port come from outside the mesh:\n{table}"
        );
    }
    let strict = Command::new(&seamctl)
        .args(["verify", "--require-mtls", "--admin", &admin])
        .output()
        .await?;
    let said = String::from_utf8_lossy(&strict.stderr);
    assert!(
        !strict.status.success() && said.contains("1 edge(s) carried plaintext"),
        "--require-mtls counts the published port's edge and no other: {said}"
    );

    // A restarted app joins its sidecar's namespace again (the sidecar kept running), and
    // its callers reach it through the mesh as before: api takes only mTLS.
    project.compose(&["restart", "-t", "2", "api"]).await?;
    orders_from_web(web, Duration::from_secs(30)).await?;

    project.down().await?;
    eprintln!(
        "compose_inject: up in {:.1}s, checked and down in {:.1}s",
        up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until web, on its published port, answers with the orders it got from api.
async fn orders_from_web(web: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    wait::until("web answers with api's orders", timeout, || async move {
        let (status, body) = launch::http_get(web, "/cgi-bin/orders").await?;
        if status != 200 || !body.contains(ORDER) {
            bail!("web answered {status}: {body:?}");
        }
        Ok(body)
    })
    .await
}

/// The transport of the `caller` → `callee` row of `seamctl verify`'s table.
fn edge(table: &str, caller: &str, callee: &str) -> Option<String> {
    table.lines().find_map(|row| {
        let cells: Vec<&str> = row.split_whitespace().collect();
        (cells.len() >= 3 && cells[0] == caller && cells[1] == callee).then(|| cells[2].to_owned())
    })
}

fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
