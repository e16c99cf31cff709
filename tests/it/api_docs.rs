//! The interactive API page as a browser renders it: `botmeter serve` on a migrated database,
//! headless Chromium loading `/docs/` with the network limited to that server, dumping the DOM
//! Swagger UI built and taking a screenshot.
//!
//! The page must list every route of the served OpenAPI description (Swagger UI fetched
//! `/openapi.json` and rendered it, from files the binary serves itself), and the screenshot must be
//! a PNG of the window's size with real content. With `BOTMETER_UPDATE_SCREENSHOT=1` the screenshot
//! is also copied to `docs/api-docs.png`, the one the README shows.

use std::path::Path;
use std::time::Duration;

use crate::browser::{png_size, run_chromium};
use crate::support::TestEnv;

const WINDOW: (u32, u32) = (1280, 1800);

/// Chromium flags: give the page's scripts time to fetch and render (virtual time runs ahead when
/// idle), and send every host but loopback nowhere, so a file fetched from a CDN would be missing.
fn page_flags() -> Vec<String> {
    vec![
        "--virtual-time-budget=15000".to_owned(),
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_page_renders_every_route_in_chromium_without_a_cdn() {
    let env = TestEnv::new("api_docs");
    let output = env.command(&["migrate"]).output().expect("run migrate");
    assert!(
        output.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (mut serve, base) = env.serve().await;
    let spec: serde_json::Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
    assert!(paths.len() > 5, "{spec}");

    let url = format!("{base}/docs/");
    let profile = env.log_dir.join("chromium-profile");
    let mut flags = page_flags();
    flags.push("--dump-dom".to_owned());
    let dom = run_chromium(&profile, &flags, &url);
    assert!(
        dom.contains("class=\"swagger-ui\""),
        "Swagger UI did not start:\n{dom}"
    );
    assert!(
        dom.contains(spec["info"]["title"].as_str().unwrap()),
        "the description's title is not on the page:\n{dom}"
    );
    for path in &paths {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} is not on the page:\n{dom}"
        );
    }

    let png = env.log_dir.join("api-docs.png");
    let _ = std::fs::remove_file(&png);
    let mut flags = page_flags();
    flags.push(format!("--screenshot={}", png.display()));
    flags.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
    run_chromium(&profile, &flags, &url);
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert_eq!(png_size(&bytes), WINDOW, "screenshot size");
    // A blank page compresses to a few kB; a rendered route list does not.
    assert!(
        bytes.len() > 30_000,
        "screenshot of {} bytes looks empty",
        bytes.len()
    );
    if std::env::var("BOTMETER_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&png, docs.join("api-docs.png")).unwrap();
    }

    let status = serve.terminate(Duration::from_secs(30));
    assert!(status.success(), "serve exited with {status}");
    env.drop_database().await;
}
