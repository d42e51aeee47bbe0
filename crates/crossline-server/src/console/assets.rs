//! The console's CSS, JavaScript and icon, compiled into the binary and served under `/assets/`.
//!
//! Pages link each file with `?v=<content hash>`, so the files can be cached for a year: a new
//! build changes the hash and with it the URL.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 5] = [
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/console.js"),
    },
    // Loaded only by the template editor's page.
    Asset {
        name: "template-editor.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/template-editor.js"),
    },
    // Loaded only by the agent inbox.
    Asset {
        name: "inbox.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/inbox.js"),
    },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", bytes: include_bytes!("../../assets/favicon.svg") },
];

/// FNV-1a: a stable, dependency-free fingerprint; collisions only cost a stale cache.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The URL of an embedded asset, with its content hash for cache busting.
pub fn url(name: &str) -> String {
    static VERSIONS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let versions = VERSIONS.get_or_init(|| {
        ASSETS.iter().map(|asset| (asset.name, format!("{:08x}", fingerprint(asset.bytes) as u32))).collect()
    });
    match versions.iter().find(|(known, _)| *known == name) {
        Some((_, version)) => format!("/assets/{name}?v={version}"),
        None => format!("/assets/{name}"),
    }
}

/// `GET /assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")], "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_content_hash() {
        let css = url("console.css");
        assert!(css.starts_with("/assets/console.css?v="), "{css}");
        assert_eq!(css.len(), "/assets/console.css?v=".len() + 8);
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
    }
}
