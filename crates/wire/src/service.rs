//! The sans-IO contract between the network front-ends (`packgate-transport`) and the
//! protocol (`packgate-protocol`): the plain data a front-end hands over (a git:// request
//! head, a routed smart HTTP request with its credentials), the handler traits it calls, and
//! what a handler answers (a [`Session`](daemon::Session) to run, a
//! [`Refusal`](http::Refusal)).
//!
//! It lives here, below both, so that the arrows point down: the protocol implements the
//! traits without depending on the front-ends, the front-ends call them without knowing
//! repositories, and the `packgate` binary plugs one into the other. Nothing here does I/O
//! of its own: handlers get blocking [`Read`](std::io::Read)/[`Write`](std::io::Write)
//! halves, and the front-end decides where they lead.
//!
//! * [`daemon`]: git://: [`RequestHead`](daemon::RequestHead) and
//!   [`parse_request_head`](daemon::parse_request_head),
//!   [`ConnectionHandler`](daemon::ConnectionHandler) and the sessions it opens.
//! * [`http`]: smart HTTP: [`GitRequest`](http::GitRequest),
//!   [`SmartHttpHandler`](http::SmartHttpHandler),
//!   [`BasicCredentials`](http::BasicCredentials).
//! * [`access`]: who may read and push which repositories, for every front-end that knows
//!   its user.

pub mod access;
pub mod daemon;
pub mod http;

/// The service a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `git-upload-pack`: fetch and clone.
    UploadPack,
    /// `git-receive-pack`: push.
    ReceivePack,
    /// `git-upload-archive`: `git archive --remote`.
    UploadArchive,
}

impl Service {
    /// The name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
            Service::UploadArchive => "git-upload-archive",
        }
    }
}

/// Something a request waits for before it is answered (a `wait-refs` request, an HTTP
/// long-poll for ref changes): the front-end awaits `changed` or the `deadline`, whichever
/// comes first, without holding a thread, then asks the handler for the answer. A handler
/// registers interest *before* it reads the state it compares against, so a change between
/// the two is never lost; waking up without a change is allowed (the handler checks again).
pub struct Wait {
    /// Resolves once the answer may differ from what it was when the wait began.
    pub changed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>,
    /// When to answer anyway ("nothing changed").
    pub deadline: std::time::Instant,
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
