//! Small rtnetlink helpers shared by the plumbing modules: a one-thread runtime, a
//! connection in the calling thread's namespace, finding links and bringing them up.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkUnspec};

/// A one-thread runtime for netlink calls.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("netlink runtime: {e}"))
}

/// A netlink connection in the calling thread's network namespace.
pub(crate) async fn connect() -> Result<Handle, String> {
    let (conn, h, _) = rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
    tokio::spawn(conn);
    Ok(h)
}

/// The interface named `name`, if any.
pub(crate) async fn find(h: &Handle, name: &str) -> Result<Option<LinkMessage>, String> {
    match h.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(format!("find {name}: {e}")),
    }
}

/// The interface named `name`.
pub(crate) async fn must_find(h: &Handle, name: &str) -> Result<LinkMessage, String> {
    find(h, name).await?.ok_or_else(|| format!("no interface {name}"))
}

/// Brings interface `index` up.
pub(crate) async fn up(h: &Handle, index: u32, what: &str) -> Result<(), String> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| format!("bring up {what}: {e}"))
}
