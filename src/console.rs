//! The web console, served by the admin listener at `/console/`.
//!
//! Its files (plain ES modules, one stylesheet, an icon) are compiled into
//! the binary, so the console works offline and no file system path is ever
//! derived from a request: a request names one of the [`ASSETS`] exactly or
//! gets a 404. Every answer carries a strict Content-Security-Policy (scripts
//! and styles from this origin only, no inline code, no framing) and
//! `nosniff`, so even a value that slipped into the page as markup could not
//! run.
//!
//! The console itself holds no authority: it calls the same admin endpoints
//! as curl does, with the pasted token, and the gateway checks every call.
//! [`stats`] (the audit summary behind the chart) and [`try_it`] (running an
//! unsaved adapter once) are the two endpoints added for it.

pub mod stats;
pub mod try_it;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::error::{GatewayError, RequestError};

/// Where the console lives on the admin listener.
pub const PREFIX: &str = "/console/";

/// The policy sent with every console file: nothing but this origin, no
/// inline script or style, no plugins, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under [`PREFIX`], content type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// File name, e.g. `app.js`.
    pub name: &'static str,
    /// `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The file.
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ctype:literal) => {
        Asset {
            name: $name,
            content_type: $ctype,
            body: include_bytes!(concat!("console/assets/", $name)),
        }
    };
}

/// Every file the console has; nothing else is served.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("i18n.js", "text/javascript; charset=utf-8"),
    asset!("audit.js", "text/javascript; charset=utf-8"),
    asset!("chart.js", "text/javascript; charset=utf-8"),
    asset!("adapter.js", "text/javascript; charset=utf-8"),
];

/// The embedded file called `name` (`""` is `index.html`).
pub fn asset(name: &str) -> Option<&'static Asset> {
    let name = if name.is_empty() { "index.html" } else { name };
    ASSETS.iter().find(|a| a.name == name)
}

/// Answers a console request, given the normalised path (`/console`,
/// `/console/` or `/console/NAME`). `/console` redirects to `/console/` so
/// relative asset links resolve; unknown names (including anything with a
/// further `/`) are 404.
pub fn serve(path: &str) -> Result<Response<Full<Bytes>>, GatewayError> {
    if path == "/console" {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static(PREFIX));
        secure(&mut r);
        return Ok(r);
    }
    let name = path
        .strip_prefix(PREFIX)
        .ok_or_else(|| RequestError::NotFound("no such console file".into()))?;
    let a = asset(name).ok_or_else(|| RequestError::NotFound("no such console file".into()))?;
    let mut r = Response::new(Full::new(Bytes::from_static(a.body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    secure(&mut r);
    Ok(r)
}

/// The security headers of every console answer.
fn secure(r: &mut Response<Full<Bytes>>) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_modules_are_served_with_their_types() {
        let r = serve("/console/").unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        for (name, ctype) in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("icon.svg", "image/svg+xml"),
        ] {
            let r = serve(&format!("/console/{name}")).unwrap();
            assert_eq!(r.headers()[header::CONTENT_TYPE], ctype, "{name}");
            assert_eq!(
                r.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
        }
    }

    #[test]
    fn only_known_names_are_served() {
        for p in [
            "/console/nope.js",
            "/console/assets/app.js",
            "/console/index.html/",
            "/console/app.js/x",
            "/consoleX",
            "/console/..",
        ] {
            assert!(serve(p).is_err(), "{p}");
        }
    }

    #[test]
    fn bare_console_redirects() {
        let r = serve("/console").unwrap();
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "/console/");
    }

    #[test]
    fn every_module_imported_is_embedded() {
        // A module the page imports but the table lacks would 404 in the browser.
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit("from '").next().unwrap();
                let name = from.trim_end_matches("';").trim_start_matches("./");
                assert!(asset(name).is_some(), "{} imports {name}", a.name);
            }
        }
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let html = std::str::from_utf8(asset("index.html").unwrap().body).unwrap();
        assert!(!html.contains("<style"));
        assert!(!html.contains(" style="));
        let attr_names = html
            .split(|c: char| c.is_whitespace())
            .filter_map(|w| w.split_once('=').map(|(name, _)| name));
        for name in attr_names {
            assert!(!name.starts_with("on"), "inline event handler `{name}`");
        }
        for script in html.split("<script").skip(1) {
            let tag_end = script.find('>').unwrap();
            assert!(script[..tag_end].contains("src="), "inline script");
            assert!(script[tag_end + 1..].starts_with("</script>"));
        }
    }
}
