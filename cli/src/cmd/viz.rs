//! `cdsctl viz`: serves the visualizer page (and optionally a trace) on
//! localhost and prints the address to open.
//!
//! The page is static files built by `viz-wasm/build.sh` (a wasm module,
//! its JavaScript glue and the page). Opened from disk it can play tours
//! (scripts beside it), but a browser will not let it read an arbitrary
//! trace file from `file://`; this is the smallest server that hands it
//! one, bound to loopback only.

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
    /// The built page (index.html, viz.js, pkg/). By default the first of:
    /// `viz` beside the directory of the executable (`target/viz` for
    /// `target/release/cdsctl`), `target/viz` in the workspace cdsctl was
    /// built from, `target/viz` in the current directory. When none has
    /// the page and that workspace has `viz-wasm/build.sh`, it is built
    /// there first.
    #[arg(long)]
    pub page: Option<PathBuf>,
    /// Open the trace at this event (`&at=N` in the printed address).
    #[arg(long)]
    pub at: Option<u64>,
}

struct Served {
    page: PathBuf,
    trace: Option<(String, PathBuf)>,
}

/// A place the page may be, and why it is looked at (for the error that
/// lists them).
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    dir: PathBuf,
    why: &'static str,
}

/// Where the page is looked for without `--page`, in order. The
/// executable's own place comes first so an installed or copied build
/// serves the page built with it, whatever the current directory.
fn candidates() -> Vec<Candidate> {
    let mut out = Vec::new();
    // `target/release/cdsctl` -> `target/viz`.
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(target) = exe_dir.as_deref().and_then(Path::parent) {
        out.push(Candidate {
            dir: target.join("viz"),
            why: "beside the executable",
        });
    }
    out.push(Candidate {
        dir: workspace().join(DEFAULT_PAGE_DIR),
        why: "in the workspace cdsctl was built from",
    });
    let cwd = std::env::current_dir().unwrap_or_default();
    out.push(Candidate {
        dir: cwd.join(DEFAULT_PAGE_DIR),
        why: "in the current directory",
    });
    // The three are often one place (run from the repository root).
    let mut seen = Vec::new();
    out.retain(|c| {
        let new = !seen.contains(&c.dir);
        seen.push(c.dir.clone());
        new
    });
    out
}

/// The workspace root this binary was built from.
fn workspace() -> PathBuf {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
    cli.parent().unwrap_or(cli).to_path_buf()
}

fn has_page(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// The first candidate holding the page, or an error naming every place
/// looked at and how to build the page.
fn first_page(candidates: &[Candidate]) -> Result<PathBuf> {
    if let Some(c) = candidates.iter().find(|c| has_page(&c.dir)) {
        return Ok(c.dir.clone());
    }
    let places: Vec<String> = candidates
        .iter()
        .map(|c| format!("  {} ({})", c.dir.display(), c.why))
        .collect();
    bail!(
        "no visualizer page (index.html) in any of:\n{}\nbuild it with viz-wasm/build.sh \
         in the repository, or pass --page DIR",
        places.join("\n")
    )
}

/// The page to serve: `--page` as given, or the first candidate that has
/// it, building it in the workspace when none has and the workspace can.
fn find_page(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = given {
        if !has_page(dir) {
            bail!(
                "{}: no visualizer page there; build it with viz-wasm/build.sh from the \
                 repository root, or pass another --page DIR",
                dir.display()
            );
        }
        return Ok(dir.to_path_buf());
    }
    let candidates = candidates();
    if let Ok(dir) = first_page(&candidates) {
        return Ok(dir);
    }
    let script = workspace().join("viz-wasm/build.sh");
    if script.is_file() {
        // It writes `target/viz` of its own repository: a candidate.
        eprintln!("building the visualizer ({})...", script.display());
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .with_context(|| format!("cannot run {}", script.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", script.display());
        }
    }
    first_page(&candidates)
}

/// Runs `cdsctl viz` until interrupted.
pub fn run(args: VizArgs) -> Result<()> {
    let page = find_page(args.page.as_deref())?;
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
    let served = Arc::new(Served { page, trace });
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

    #[test]
    fn the_first_place_with_a_page_wins_and_a_miss_names_them_all() {
        let tmp = tempfile::tempdir().unwrap();
        let place = |name: &str, why| Candidate {
            dir: tmp.path().join(name),
            why,
        };
        let places = [place("exe", "beside"), place("ws", "in the workspace")];
        let err = format!("{:#}", first_page(&places).unwrap_err());
        for c in &places {
            assert!(err.contains(&c.dir.display().to_string()), "{err}");
            assert!(err.contains(c.why), "{err}");
        }
        assert!(err.contains("viz-wasm/build.sh"), "{err}");
        for c in places.iter().rev() {
            std::fs::create_dir_all(&c.dir).unwrap();
            std::fs::write(c.dir.join("index.html"), "<html>").unwrap();
            assert_eq!(first_page(&places).unwrap(), c.dir);
        }
    }
}
