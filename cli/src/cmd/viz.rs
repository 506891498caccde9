//! `cdsctl viz`: serves the visualizer page (and optionally a trace) on
//! localhost and prints the address to open.
//!
//! The page is static files built by `viz-wasm/build.sh` (a wasm module,
//! its JavaScript glue and the page). Browsers refuse to load modules from
//! `file://`, so it has to be served over HTTP; this is the smallest server
//! that does that, bound to loopback only.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Args;

/// Where `viz-wasm/build.sh` puts the page, relative to the repository root.
pub const DEFAULT_PAGE_DIR: &str = "target/viz";

/// Arguments of `cdsctl viz`.
#[derive(Debug, Args)]
pub struct VizArgs {
    /// An rtrace file to open in the page (served at /trace/NAME).
    pub trace: Option<PathBuf>,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The built page (index.html, viz.js, pkg/). When it is missing and this
    /// is the repository root, `viz-wasm/build.sh` builds it first.
    #[arg(long, default_value = DEFAULT_PAGE_DIR)]
    pub page: PathBuf,
    /// Open the trace at this event (`&at=N` in the printed address).
    #[arg(long)]
    pub at: Option<u64>,
}

struct Served {
    page: PathBuf,
    trace: Option<(String, PathBuf)>,
}

/// Runs `cdsctl viz` until interrupted.
pub fn run(args: VizArgs) -> Result<()> {
    if !args.page.join("index.html").is_file() {
        let script = Path::new("viz-wasm/build.sh");
        if args.page == Path::new(DEFAULT_PAGE_DIR) && script.is_file() {
            eprintln!("building the visualizer (viz-wasm/build.sh)...");
            let status = Command::new("bash")
                .arg(script)
                .status()
                .context("cannot run viz-wasm/build.sh")?;
            if !status.success() {
                bail!("viz-wasm/build.sh failed ({status})");
            }
        } else {
            bail!(
                "{}: no visualizer page there; build it with viz-wasm/build.sh from the \
                 repository root, or pass --page DIR",
                args.page.display()
            );
        }
    }
    let trace = match &args.trace {
        None => None,
        Some(p) => {
            if !p.is_file() {
                bail!("{}: no such trace file", p.display());
            }
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.is_empty())
                .unwrap_or("trace.rtrace")
                .to_string();
            Some((name, p.clone()))
        }
    };
    let served = Arc::new(Served {
        page: args.page.clone(),
        trace,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
        let addr = listener.local_addr()?;
        let mut url = format!("http://{addr}/");
        if let Some((name, _)) = &served.trace {
            url.push_str(&format!("?trace=/trace/{name}"));
            if let Some(n) = args.at {
                url.push_str(&format!("&at={n}"));
            }
        }
        outln!("{url}");
        eprintln!("serving {} (Ctrl-C stops)", served.page.display());
        let app = Router::new().fallback(serve).with_state(served);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the HTTP server failed")
    })
}

/// The content type for a file name, by extension; `.wasm` must be
/// `application/wasm` for streaming compilation.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    }
}

/// Maps a request path to a file under `root`, refusing anything that could
/// leave it (`..`, absolute parts).
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() || rel.ends_with('/') {
        format!("{rel}index.html")
    } else {
        rel.to_string()
    };
    let rel = Path::new(&rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

async fn serve(State(s): State<Arc<Served>>, uri: Uri) -> Response {
    let path = uri.path();
    let file = match (&s.trace, path.strip_prefix("/trace/")) {
        (Some((name, file)), Some(asked)) if asked == name => Some(file.clone()),
        _ => resolve(&s.page, path),
    };
    let Some(file) = file else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    // Small static files: a blocking read is fine on this one-user server.
    match std::fs::read(&file) {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&file)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from(bytes),
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, format!("no such file: {path}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_page() {
        let root = Path::new("/srv/page");
        assert_eq!(resolve(root, "/"), Some(root.join("index.html")));
        assert_eq!(
            resolve(root, "/pkg/viz_wasm.js"),
            Some(root.join("pkg/viz_wasm.js"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/pkg/../../x"), None);
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
    }
}
