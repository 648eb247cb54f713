//! systemd's notify protocol: tell the service manager we are ready, and which pid is the
//! service after an upgrade.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1\nMAINPID=42`) to `$NOTIFY_SOCKET`. Not under systemd (no
/// variable), it does nothing; a failure is logged, never fatal: serving matters more.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        // A leading '@' names a socket in the abstract namespace (Linux).
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(socket = ?path, "cannot notify systemd: {e}");
    }
}

/// Tells systemd this process is ready and is now the service's main process: after
/// `run --upgrade`, that moves systemd's attention from the old pid to this one before the
/// old one exits (the unit needs `NotifyAccess=all`).
pub(crate) fn ready() {
    notify(&format!("READY=1\nMAINPID={}", std::process::id()));
}
