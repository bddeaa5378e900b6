//! End-to-end tests: real git clients against the real `packgate` binary.
//!
//! Helpers:
//! - `util`: temporary directories, isolated git clients (`Git::all()` — every installed
//!   version), subprocesses with a time limit (or in the background, to be killed), shared
//!   fixtures, ref comparison.
//! - `pkt`: pkt-lines written and read by hand.
//! - `cgi_host`: a minimal web server that runs `packgate http-backend` as a CGI program
//!   (and plays Apache's `Require valid-user` on push URLs).
//!
//! Tests:
//! - `client_matrix`: `packgate mirror`, `fetch` and `push` run as a user would against
//!   `git daemon` (both gits), `git http-backend`, ssh through a shim, a relative local path
//!   with a space, and `packgate serve` (git://, HTTP): refs equal `git ls-remote`'s, fsck
//!   clean on both sides, a second round after the upstream moved.
//! - `client_transport`: packgate's client transports (`transport::client::Client`) against
//!   `git daemon`, `git http-backend`, `packgate serve` (HTTP, HTTPS, credentials), ssh through a
//!   recording shim, and local paths; refused, stalled (timeouts), 404 and malformed URLs.
//! - `clone`: bare, mirror and work-tree clones of every small preset, with every git.
//! - `bitmaps`: clones (whole, `blob:none`, `tree:0`) and a fetch from a repository with a
//!   reachability bitmap and loose objects after it: counted with the bitmap (its debug
//!   event), the same objects as git's upload-pack sends; `pack.useBitmaps=false` walks; a
//!   multi-pack index's bitmap over several packs; the same with a `.rev` and `.bitmap`
//!   packgate's writers made for git's plain repack.
//! - `fetch`: incremental and no-op fetches; packgate sends no more objects than git;
//!   `pack.useSparse` on (git's sparse tree comparison) and off.
//! - `fetch_v0`: protocol v0 and v1 over stdio, git:// (`serve`, `daemon`) and HTTP (`serve`,
//!   `http-backend`): clones, fetches, a fork far ahead, an empty repository; the
//!   advertisement against git's.
//! - `fetch_client`: packgate's own fetch client (`packgate fetch`, `packgate mirror`, and
//!   a stateless connection in the test) against git's and packgate's upload-pack, v2/v1/v0:
//!   refs equal `git ls-remote`, fsck, non-fast-forward, tags, prune, a mirror equal to `git
//!   clone --mirror`, an empty remote, and a fork 3000 commits ahead (no more haves, no
//!   bigger pack than `git fetch`).
//! - `fetch_features`: `want-ref`, `wait-for-done`, `sideband-all`, `packfile-uris`,
//!   `session-id`, `object-info` and `bundle-uri` through git 2.47 and 2.39 (stdio, git://,
//!   HTTP in `serve` and `http-backend`) and request by request against `git upload-pack`'s
//!   answers.
//! - `filter`: partial clones (`--filter`, `uploadpack.allowFilter`) over v2 and v0, stdio and
//!   HTTP, compared with what git's upload-pack sends; lazy fetches after them; `ERR` for bad
//!   and refused filters.
//! - `gate`: a gated repository behind git:// and HTTP in process, with fake upstream
//!   clients: pushes move the gate only as far as upstream accepted, upstream's refusal
//!   reaches the client, no upstream client refuses; `packgate.refreshOnFetch`: four
//!   concurrent fetches share one refresh, an HTTP fetch refreshes once (on its GET), a
//!   failing refresh still serves.
//! - `gate_upstream`: the gate with the real binary: git 2.47 and 2.39 push to `packgate serve`
//!   (git:// and HTTP; `packgate.upstream` or the TOML's `upstream`) and `packgate daemon`
//!   gated in front of `git daemon --enable=receive-pack`, `packgate serve` or a local path
//!   with a space (absolute, relative): clean pushes land in both, a secret-scanning
//!   `pre-receive` keeps a key from both, upstream's refusals (non-fast-forward, a stale
//!   lease) reach the client, a down or stalled upstream fails within
//!   `packgate.upstreamTimeout`, atomic pushes carry push options upstream, a client killed
//!   mid-pack sends nothing upstream.
//! - `wants`: wants of objects that are not ref tips (git's v2 default, and
//!   `packgate.restrictV2Wants` with the `uploadpack.allow*SHA1InWant` settings).
//! - `mirror_serve`: `packgate serve --config` with `[[mirror]]` (a local path, `git daemon`):
//!   created at start and served, following upstream on SIGHUP and on the interval, branches
//!   pruned; a refresh stalled mid-pack serves the old state and ends by `refresh-timeout`
//!   with no quarantine left; `packgate.refreshOnFetch` over git:// and HTTP, and a failing
//!   upstream still served.
//! - `ls_remote`: `git ls-remote` through packgate equals it through git's upload-pack.
//! - `namespaces`: `GIT_NAMESPACE` for `upload-pack` (v0, v2, want-ref, hideRefs) and
//!   `receive-pack` (advertisement with `.have`, namespaced updates), and through
//!   `http-backend`, against git's services.
//! - `budget`: the CPU and memory budget: with one slot taken, clones over git:// (v2 and
//!   v0) queue, then all complete and fsck.
//! - `bad_input`: malformed requests end in `ERR` and a non-zero exit, never a panic or hang;
//!   a stalled client ends in `--timeout`.
//! - `advertise`: `--advertise-refs`, `--http-backend-info-refs` and `--stateless-rpc`.
//! - `keepalive`: `receive.keepAlive` keepalive packets while a push's hooks run.
//! - `large`: a clone of more than 100,000 objects.
//! - `libgit2`: pygit2 (libgit2, protocol v0 only; `tests/clients/setup.sh` installs it)
//!   clones, fetches and fetches tags through every network front-end, checked against
//!   `git daemon` and `git http-backend` on the same repository.
//! - `layers`: protocol, negotiate, pack, object, hooks and wire never depend on tokio,
//!   hyper or rustls (`cargo tree`).
//! - `push_cert`: signed pushes (`git push --signed`, a throwaway gpg key): the signature
//!   verified by the configured `gpg.program` as git's receive-pack does, good (`G`) and
//!   tampered (`B`), the same as git's receive-pack tells its hooks.
//! - `receive_fsck`: `receive.fsckObjects` as git's `index-pack --strict`: `receive.fsck.*`
//!   severities and skip lists, warnings, packs lacking what their objects name.
//! - `push_client`: `packgate push` (packgate's send-pack) into `packgate receive-pack` and
//!   `git receive-pack`: new branch, fast-forward, tag, delete, non-fast-forward and fetch
//!   first (not sent), forced, the remote's refusals, leases, atomic, push options, hook
//!   output, thin packs, a stateless connection, a remote killed after the pack (unknown).
//! - `receive_pack`: `git push` through `packgate receive-pack`: updates, config, hooks, atomic,
//!   concurrent pushers; pushes cut off mid-pack (client killed, input ended, `--timeout`)
//!   leave nothing behind.
//! - `proc_receive`: the `proc-receive` hook (`receive.procReceiveRefs`, review refs in
//!   the "AGit" flow): pushes through packgate and through git's receive-pack with the same
//!   hook script, compared (porcelain lines, `remote:` lines, refs): `ok` with `option`
//!   lines, `ng`, fall-through, no report, a failing hook, atomic pushes, push options,
//!   modifiers; over HTTP; report-status v1 byte for byte.
//! - `crash`: a push whose server is killed (SIGKILL) during pack receipt, each hook or
//!   between migration and ref update blocks no later push; pushes to different refs
//!   overlap; stale quarantines expire; a stale ref lock fails only its ref, as in git.
//! - `memory`: what one push may allocate: `receive.maxObjectSize` and huge deltas refused,
//!   blobs above `core.bigFileThreshold` streamed.
//! - `pack_cache`: identical clones over git:// and HTTP (`serve`, `daemon`) share one pack
//!   generation and get the same bytes; a push changes the key; depth, filter and
//!   include-tag fetches do not share a plain clone's pack.
//! - `serve`: `packgate serve` over git:// on loopback, and what it refuses.
//! - `http`: smart HTTP clones, fetches and pushes; `http_auth`: pushes with credentials
//!   (`--http-credentials`, `packgate passwd`), over TLS, and the service embedded in an axum
//!   application (`examples/axum.rs`).
//! - `daemon`: `packgate daemon`, the drop-in for git daemon: its lookup rules, path attacks,
//!   push switches, log lines (hook output without sideband), pid file and SIGTERM.
//! - `http_backend`: `packgate http-backend`, the CGI drop-in for git-http-backend: CGI
//!   variables in, CGI response out (export-ok, REMOTE_USER, path attacks, methods), and
//!   clone, fetch and push with git through `cgi_host`.
//! - `refs_watch`: refs tokens and `wait-refs` (docs/refs-watch.md) over stdio, git:// and
//!   HTTP with a raw v2 client: `if-none-match` unchanged until a push or `git update-ref`
//!   (not `git pack-refs`), waiters woken by pushes over every front-end and by writes on
//!   disk, timing out, never told of hidden refs, leaving when the client hangs up; bad
//!   input answered with `ERR`; `packgate.refsWatch = false`; git still clones and fetches.
//! - `ref_names`: ref names and prefixes from clients: `ref-prefix`es that climb out of the
//!   repository read nothing; pushes to symbolic refs and to the same ref twice.
//! - `refs_watch_http`: the refs watch over HTTP: advertisements' `ETag` and `304` (git still
//!   fetches), `GET <repo>/refs` long-polls and event streams woken by pushes over HTTP and
//!   git://, hidden refs, refusals as for a fetch, a client leaving, bad input, the CGI
//!   front-end answering at once, and the `watch_http` client.
//! - `shallow_push`: pushes from `git clone --depth 1` clones: to their origin (accepted),
//!   into repositories without the history (refused, or with `receive.shallowUpdate` the
//!   same `$GIT_DIR/shallow` as git's receive-pack writes), over stdio, HTTP and git://;
//!   atomic and mixed pushes; a server killed while writing the shallow file.
//! - `shallow`: shallow fetches (`--depth`, `--deepen`, `--unshallow`, `--shallow-since`,
//!   `--shallow-exclude`) with every git, v2 and v0, over stdio, git:// and HTTP, and from a
//!   shallow repository, each step compared with `git upload-pack`'s result; bad shallow
//!   requests get git's words; the shallow sections are git's.
//! - `ssh`: `packgate serve --ssh` with the OpenSSH client: clone, fetch and push over v2
//!   and v0 with every git; unknown keys, commands, shells, subsystems, forwarding and paths
//!   outside the root refused; a push cut off mid-pack leaves nothing.
//! - `sessions`: git:// sessions: push when a repository enables it; idle connections hold
//!   no thread.
//! - `update_instead`: `receive.denyCurrentBranch=updateInstead` and the `push-to-checkout`
//!   hook: pushes into the branch checked out in a main or linked work tree update it (or
//!   are refused when it is not clean), compared with git's receive-pack on the same setup.
//! - `maintenance`: `packgate maintenance run`: 200 pushes repacked by `--auto` into a pack
//!   with a bitmap and a commit-graph git reads; the prune grace period (loose and in packs);
//!   `gc.pid` both ways with git; `--auto` thresholds; a push starting maintenance; kill -9 at
//!   each phase; maintenance beside pushes and clones; repository paths; stale lock files
//!   of killed writers.
//! - `watch_client`: `packgate watch` over git:// and a local path prints what real git
//!   pushes and fails when the server goes away or has no `wait-refs` (git daemon);
//!   `packgate mirror` sends no `fetch` when the remote's refs token is unchanged, and
//!   follows a change (and a mirror changed by someone else); `serve`'s mirror refresh
//!   skips an unchanged upstream.
//! - `trust`: hooks judge pushes whatever path led to the repository (relative, symlinks,
//!   every front-end); no entry point runs `git`, nor does maintenance (run by hand or
//!   started by a push).

mod cgi_host;
mod pkt;
mod util;

mod advertise;
mod bad_input;
mod bitmaps;
mod budget;
mod client_matrix;
mod client_transport;
mod clone;
mod crash;
mod daemon;
mod fetch;
mod fetch_client;
mod fetch_features;
mod fetch_v0;
mod filter;
mod gate;
mod gate_upstream;
mod http;
mod http_auth;
mod http_backend;
mod keepalive;
mod large;
mod layers;
mod libgit2;
mod ls_remote;
mod maintenance;
mod memory;
mod mirror_serve;
mod namespaces;
mod pack_cache;
mod proc_receive;
mod push_cert;
mod push_client;
mod receive_fsck;
mod receive_pack;
mod ref_names;
mod refs_watch;
mod refs_watch_http;
mod serve;
mod sessions;
mod shallow;
mod shallow_push;
mod ssh;
mod trust;
mod update_instead;
mod wants;
mod watch_client;
