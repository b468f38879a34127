//! The HTTP routes of a mounted socket: `<path>/websocket`, and
//! `<path>/longpoll` when long polling is on (Phoenix's `socket/3` with
//! `websocket: true, longpoll: true`).

use std::sync::Arc;

use axum::routing::any;

use crate::conn::SocketShared;
use crate::Socket;

/// The socket's routes under `path` (a trailing `/` is ignored), carrying
/// their own state so that they merge into a router of any state `St`.
pub(crate) fn router<S: Socket, St: Clone + Send + Sync + 'static>(
    shared: Arc<SocketShared<S>>,
    path: &str,
) -> axum::Router<St> {
    let base = path.trim_end_matches('/');
    let mut router = axum::Router::new().route(&format!("{base}/websocket"), any(super::websocket::upgrade::<S>));
    if shared.config.longpoll {
        router = router.route(&format!("{base}/longpoll"), any(super::longpoll::handle::<S>));
    }
    router.with_state(shared)
}
