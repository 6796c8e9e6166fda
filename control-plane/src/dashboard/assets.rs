//! The dashboard page, embedded in the binary (no CDN, no build step): one HTML file,
//! one script and one stylesheet, written by hand. Served with their content types and
//! `cache-control: no-cache`, so a new control plane's page replaces an old one at once.

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The asset at `path`, if there is one.
pub fn find(path: &str) -> Option<Response<Full<Bytes>>> {
    let (content_type, body) = match path {
        "/ui" | "/ui/" => ("text/html; charset=utf-8", INDEX_HTML),
        "/ui/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/ui/style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => return None,
    };
    Some(
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("static response parts are valid"),
    )
}
