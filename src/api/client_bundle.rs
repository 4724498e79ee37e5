//! `GET /client/pushwire.min.js`: the browser bundle of client-js (global `Pushwire`),
//! embedded at build time from `assets/pushwire.min.js`, so every node serves the client
//! of its own version and a page needs no npm or CDN. The file is built from client-js
//! by `npm run bundle:server`; a client-js test fails when it differs from a fresh build.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The bundle, as committed.
const BUNDLE: &str = include_str!("../../assets/pushwire.min.js");

/// Changes with the server version and with the bundle's content.
fn etag() -> String {
    let digest = BUNDLE.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{}-{digest:016x}\"", env!("CARGO_PKG_VERSION"))
}

pub async fn serve(headers: HeaderMap) -> Response {
    let etag = etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        BUNDLE.into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    // Revalidated after five minutes: an upgraded node serves its new client soon.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
