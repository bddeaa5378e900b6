//! `GET <repo>/refs` (`docs/refs-watch.md`): the refs a fetch from the repository would
//! see, as JSON events, and waiting for them to change through the process's
//! [`refs_watch`](crate::refs_watch).

use std::time::{Duration, Instant};

use bstr::ByteSlice;
use packgate_wire::service::{
    http::{RefsLook, RefsQuery, RefsWatcher, WatchRefusal},
    Wait,
};
use serde_json::{json, Value};

use crate::{
    config::UploadPackConfig,
    refname::RefPrefix,
    refs_watch::{self, Changes, RefChange, RefsState, RefsToken, Subscription},
    repository::Repository,
};

/// Start a watch of `repo` for `query`; `cap` bounds the wait further (a CGI front-end,
/// which cannot wait, passes 0).
pub(super) fn watch(
    repo: Repository,
    query: &RefsQuery,
    cap: Option<u64>,
) -> Result<Box<dyn RefsWatcher>, WatchRefusal> {
    let config = UploadPackConfig::from_config(repo.config())
        .map_err(|err| WatchRefusal::Failed(format!("upload-pack configuration: {err}")))?;
    if !config.refs_watch {
        return Err(WatchRefusal::Forbidden(format!(
            "refs watch not enabled ({}=false)",
            crate::config::REFS_WATCH
        )));
    }
    let since = match &query.since {
        Some(text) => Some(
            RefsToken::parse(text.as_bytes())
                .map_err(|err| WatchRefusal::BadRequest(err.to_string()))?,
        ),
        None => None,
    };
    let max = config.wait_refs_max_timeout.as_secs();
    // A long-poll waits 0 seconds unless asked; a stream lasts the maximum.
    let wait = match query.wait {
        Some(wait) if wait > max => {
            return Err(WatchRefusal::BadRequest(format!(
                "wait {wait} exceeds the maximum of {max} seconds"
            )))
        }
        Some(wait) => wait,
        None if query.event_stream => max,
        None => 0,
    };
    let wait = cap.map_or(wait, |cap| wait.min(cap));
    let prefixes: Vec<RefPrefix> = query.prefixes.iter().cloned().map(RefPrefix::new).collect();
    let subscription = refs_watch::global()
        .subscribe(&repo, &prefixes)
        .map_err(|err| WatchRefusal::Failed(format!("refs not readable: {err}")))?;
    Ok(Box::new(HttpRefsWatcher {
        repo,
        config,
        prefixes,
        subscription,
        seen: since,
        deadline: Instant::now() + Duration::from_secs(wait),
        event_stream: query.event_stream,
        first: true,
    }))
}

/// One `GET <repo>/refs` being answered.
struct HttpRefsWatcher {
    repo: Repository,
    config: UploadPackConfig,
    prefixes: Vec<RefPrefix>,
    subscription: Subscription,
    /// The token of the state the client has (the last sent, or the one it named).
    seen: Option<RefsToken>,
    deadline: Instant,
    event_stream: bool,
    /// Nothing looked at yet: an answer now tells no `changes`.
    first: bool,
}

impl RefsWatcher for HttpRefsWatcher {
    fn look(&mut self) -> RefsLook {
        // Taken before the refs are read: a change after this wakes the next wait.
        let changes = self.subscription.take();
        let first = std::mem::replace(&mut self.first, false);
        // Woken by a change: the listing every waiter it woke shares, read once.
        if let Some(state) =
            self.subscription
                .shared_state(&self.repo, &self.config, &self.prefixes)
        {
            return self.answer(&state, first, &changes);
        }
        // The token alone first: remembered while the ref storage is unchanged, so a client
        // that is up to date costs no read of the refs (and this request holds none).
        let token = match refs_watch::refs_token(&self.repo, &self.config, &self.prefixes) {
            Ok(token) => token,
            Err(err) => return RefsLook::Failed(format!("refs not readable: {err}")),
        };
        if self.seen.as_ref() == Some(&token) {
            return self.unchanged(token);
        }
        let state = match refs_watch::refs_state(&self.repo, &self.config, &self.prefixes) {
            Ok(state) => state,
            Err(err) => return RefsLook::Failed(format!("refs not readable: {err}")),
        };
        self.answer(&state, first, &changes)
    }
}

impl HttpRefsWatcher {
    /// The event for `state` if the client has not seen it, else wait on.
    fn answer(&mut self, state: &RefsState, first: bool, changes: &Changes) -> RefsLook {
        if self.seen.as_ref() != Some(&state.token) {
            let changes = (!first && !changes.overflow).then(|| self.visible(&changes.changes));
            let data = event(state, changes).to_string();
            let id = state.token.as_str().to_owned();
            self.seen = Some(state.token.clone());
            return RefsLook::Event { id, data };
        }
        self.unchanged(state.token.clone())
    }

    /// Nothing new for the client: wait, or end at the deadline.
    fn unchanged(&self, token: RefsToken) -> RefsLook {
        if Instant::now() >= self.deadline {
            return RefsLook::End(
                (!self.event_stream)
                    .then(|| json!({"token": token.as_str(), "changed": false}).to_string()),
            );
        }
        RefsLook::Wait(Wait {
            changed: Box::pin(self.subscription.notified()),
            deadline: self.deadline,
        })
    }

    /// The changes a client of this request may be told about: in its namespace, not
    /// hidden, under its prefixes.
    fn visible(&self, changes: &[RefChange]) -> Vec<Value> {
        changes
            .iter()
            .filter_map(|change| {
                let name = refs_watch::visible_name(&self.repo, change)?;
                let wanted = self.prefixes.is_empty()
                    || self.prefixes.iter().any(|prefix| prefix.matches(name));
                (wanted && !self.config.is_hidden(name, self.repo.namespace())).then(|| {
                    json!({
                        "name": name.to_str_lossy(),
                        "old": change.old.map(|id| id.to_string()),
                        "new": change.new.map(|id| id.to_string()),
                    })
                })
            })
            .collect()
    }
}

/// A `changed: true` event: the token, the refs and maybe the changes.
fn event(state: &RefsState, changes: Option<Vec<Value>>) -> Value {
    let refs: Vec<Value> = state
        .refs
        .iter()
        .map(|r| {
            let mut entry = json!({
                "name": r.name.to_str_lossy(),
                "id": r.id.map(|id| id.to_string()),
            });
            if let (Some(target), Value::Object(map)) = (&r.symref_target, &mut entry) {
                map.insert(
                    "symref_target".into(),
                    Value::String(target.to_str_lossy().into_owned()),
                );
            }
            entry
        })
        .collect();
    let mut event = json!({
        "token": state.token.as_str(),
        "changed": true,
        "refs": refs,
    });
    if let (Some(changes), Value::Object(map)) = (changes, &mut event) {
        map.insert("changes".into(), Value::Array(changes));
    }
    event
}
