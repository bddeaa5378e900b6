//! packgate's smart HTTP service inside an axum application.
//!
//! The application has its own route (`/` says hello) and serves the git repositories below
//! a root directory under `/git/`: `git clone http://127.0.0.1:3000/git/project.git`. Pushes
//! need HTTP Basic credentials, checked by a closure (any [`Authenticator`] would do, e.g.
//! packgate's `CredentialsFile`), and pass an in-process pre-receive hook of the
//! application's own: only branches (`refs/heads/…`) may be pushed.
//!
//! ```text
//! PACKGATE_EXAMPLE_PASSWORD=secret cargo run --example axum -- ./repos 127.0.0.1:3000
//! git push http://git:secret@127.0.0.1:3000/git/project.git main
//! ```
//!
//! `tests/http_auth.rs` includes this file and drives [`app`] with real git clients.
//!
//! [`Authenticator`]: packgate::protocol::http::Authenticator

use std::{io::Write, path::Path, sync::Arc};

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{any, get},
    Router,
};
use packgate::{
    hooks::{Hook, HookContext, RefUpdate, Verdict},
    protocol::{
        http::{HttpService, PushAccess},
        registry::Registry,
    },
    transport::http::{respond, HttpOptions},
};

/// A pre-receive policy: a push that touches a ref outside `refs/heads/` is refused whole.
pub struct BranchesOnly;

impl Hook for BranchesOnly {
    fn pre_receive(
        &self,
        _ctx: &HookContext<'_>,
        updates: &[RefUpdate],
        output: &mut dyn Write,
    ) -> Verdict {
        for update in updates {
            if !update.name.starts_with(b"refs/heads/") {
                // Reaches the client as `remote: …`.
                let _ = writeln!(
                    output,
                    "this server takes branches only, not {}",
                    update.name
                );
                return Verdict::refuse("only branches may be pushed");
            }
        }
        Verdict::Accept
    }
}

/// What the git route needs: packgate's service and its options.
pub struct GitHttp {
    service: Arc<HttpService>,
    options: Arc<HttpOptions>,
}

/// The application: `/` and packgate under `/git/` for the repositories below `root`, with
/// pushes by `user` with `password`.
pub fn app(root: &Path, user: &str, password: &str) -> Result<Router, Box<dyn std::error::Error>> {
    let registry = Registry::new(root)?;
    let (user, password) = (user.to_owned(), password.to_owned());
    // Called on the blocking pool for each push request that needs it.
    let authenticator = move |given_user: &str, given_password: &str| {
        (given_user == user && given_password == password).then(|| given_user.to_owned())
    };
    let service = HttpService::new(registry, PushAccess::authenticated(authenticator))
        .with_realm("example")
        .with_hook(BranchesOnly);
    let git = GitHttp {
        service: Arc::new(service),
        // axum's route keeps the `/git` of the path; packgate strips it.
        options: Arc::new(HttpOptions {
            path_prefix: "/git".to_owned(),
            ..HttpOptions::default()
        }),
    };
    Ok(Router::new()
        .route("/", get(|| async { "hello from the application\n" }))
        .route("/git/{*path}", any(serve_git))
        .with_state(Arc::new(git)))
}

/// The `/git/…` route: any method, any body; packgate answers every outcome itself.
async fn serve_git(State(git): State<Arc<GitHttp>>, request: Request) -> Response {
    respond(Arc::clone(&git.service), Arc::clone(&git.options), request)
        .await
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "./repos".to_owned());
    let address = args.next().unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let password = std::env::var("PACKGATE_EXAMPLE_PASSWORD")
        .map_err(|_| "set PACKGATE_EXAMPLE_PASSWORD to the password of user 'git'")?;
    let app = app(Path::new(&root), "git", &password)?;
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("serving {root} on http://{}/git/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
